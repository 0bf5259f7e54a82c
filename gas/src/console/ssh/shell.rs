//! The [`Shell`] that [`super::connect`] returns: input, resizes and output of one PTY session
//! channel, whole or split into a reader and a writer.

use std::collections::VecDeque;
use std::sync::Arc;

use russh::client;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Disconnect};

use super::{Client, Size, SshError};

/// What the shell printed, or how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Terminal output (stdout and stderr alike, as a PTY merges them anyway).
    Data(Vec<u8>),
    /// The shell exited with this status.
    Exit(u32),
    /// The shell was killed by this signal (`TERM`, `KILL`, ...).
    ExitSignal(String),
}

pub(super) enum Step {
    Output(Output),
    Closed,
    Skip,
}

pub(super) fn output_of(msg: ChannelMsg) -> Step {
    match msg {
        ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
            Step::Output(Output::Data(data.to_vec()))
        }
        ChannelMsg::ExitStatus { exit_status } => Step::Output(Output::Exit(exit_status)),
        ChannelMsg::ExitSignal { signal_name, .. } => {
            Step::Output(Output::ExitSignal(signal_name_of(&signal_name)))
        }
        ChannelMsg::Close => Step::Closed,
        _ => Step::Skip,
    }
}

fn signal_name_of(sig: &russh::Sig) -> String {
    use russh::Sig;
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => return name.clone(),
    }
    .to_owned()
}

/// A running shell. Use it whole, or [`Shell::split`] it so that a `tokio::select!` loop can
/// read output in one branch and write input in another.
pub struct Shell {
    pub(super) reader: ShellReader,
    pub(super) writer: ShellWriter,
}

// The glue uses the halves ([`Shell::split`]); the whole-shell methods serve the tests.
#[allow(dead_code)]
impl Shell {
    pub(super) fn new(
        reader: ChannelReadHalf,
        pending: Vec<Output>,
        writer: ChannelWriteHalf<client::Msg>,
        connection: client::Handle<Client>,
    ) -> Shell {
        let connection = Arc::new(connection);
        Shell {
            reader: ShellReader {
                channel: reader,
                pending: pending.into(),
                closed: false,
                _connection: connection.clone(),
            },
            writer: ShellWriter {
                channel: writer,
                connection,
            },
        }
    }

    /// Sends keyboard input.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), SshError> {
        self.writer.write(data).await
    }

    /// Tells the shell that the terminal was resized.
    pub async fn resize(&mut self, size: Size) -> Result<(), SshError> {
        self.writer.resize(size).await
    }

    /// The next output of the shell; `None` once the channel is closed.
    pub async fn next(&mut self) -> Option<Output> {
        self.reader.next().await
    }

    /// Closes the channel and the connection.
    pub async fn close(self) {
        self.writer.close().await
    }

    /// The reading and the writing side, usable concurrently. The connection lasts while either
    /// is alive (or until [`ShellWriter::close`]).
    pub fn split(self) -> (ShellReader, ShellWriter) {
        (self.reader, self.writer)
    }
}

/// The output side of a [`Shell`]. Drain it: while it is not read, the whole connection pauses
/// (see "Backpressure" in [`super`]).
pub struct ShellReader {
    channel: ChannelReadHalf,
    pending: VecDeque<Output>,
    closed: bool,
    /// Keeps the connection alive while only the reader is left.
    _connection: Arc<client::Handle<Client>>,
}

impl ShellReader {
    /// The next output of the shell; `None` once the channel is closed (by the shell's end, the
    /// server, or a lost connection). Cancel-safe, so it can be a `tokio::select!` branch.
    pub async fn next(&mut self) -> Option<Output> {
        if let Some(out) = self.pending.pop_front() {
            return Some(out);
        }
        while !self.closed {
            let Some(msg) = self.channel.wait().await else {
                self.closed = true;
                break;
            };
            match output_of(msg) {
                Step::Output(out) => return Some(out),
                Step::Closed => self.closed = true,
                Step::Skip => {}
            }
        }
        None
    }
}

/// The input side of a [`Shell`].
pub struct ShellWriter {
    channel: ChannelWriteHalf<client::Msg>,
    connection: Arc<client::Handle<Client>>,
}

impl ShellWriter {
    /// Sends keyboard input. It waits while the server's SSH window is full or while the reader
    /// is not drained. Not cancel-safe: input longer than one packet may be sent in part, so
    /// await it in a `select!` branch's body rather than as the branch's future.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), SshError> {
        self.channel
            .data_bytes(data.to_vec())
            .await
            .map_err(SshError::protocol("sending input"))
    }

    /// Tells the shell that the terminal was resized (an SSH `window-change`).
    pub async fn resize(&mut self, size: Size) -> Result<(), SshError> {
        self.channel
            .window_change(size.cols.into(), size.rows.into(), 0, 0)
            .await
            .map_err(SshError::protocol("resizing the terminal"))
    }

    /// Closes the channel and disconnects. Errors are ignored: the connection may be gone
    /// already, and either way it is over.
    pub async fn close(self) {
        let _ = self.channel.close().await;
        let _ = self
            .connection
            .disconnect(Disconnect::ByApplication, "console closed", "en")
            .await;
    }
}
