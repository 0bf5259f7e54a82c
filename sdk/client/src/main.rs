//! `thingport`: the Thingport client and admin CLI. Everything is in the library; see `cli`.

fn main() -> std::process::ExitCode {
    thingport_client::cli::main()
}
