//! What the `ext` commands do and print: pack, keygen, pubkey, import, list, delete.

use super::{block_on, connect, ExtCommand, GlobalArgs};
use crate::keys;
use crate::pack::{self, PackOptions, PackReport};
use crate::table;
use anyhow::bail;
use serde_json::Value;

/// Runs an `ext` command.
pub fn run(global: &GlobalArgs, command: ExtCommand) -> anyhow::Result<()> {
    match command {
        ExtCommand::Pack(args) => {
            let report = pack::pack(&PackOptions {
                dir: args.dir,
                output: args.output,
                profile: args.profile,
                target_dir: args.target_dir,
                sign_key: args.sign_key,
            })?;
            for warning in &report.warnings {
                eprintln!("{warning}");
            }
            print!("{}", describe_pack(&report));
            Ok(())
        }
        ExtCommand::Keygen { output } => {
            let key = keys::keygen(&output)?;
            println!(
                "{}",
                keys::public_key_line(&key, &output.display().to_string())
            );
            eprintln!(
                "wrote the signing key {}; add the line above to the server's \
                 --trusted-extension-keys file",
                output.display()
            );
            Ok(())
        }
        ExtCommand::Pubkey { key } => {
            let signing = keys::SigningKey::load(&key)?;
            let line = keys::public_key_line(&signing.public_key(), &key.display().to_string());
            println!("{line}");
            Ok(())
        }
        ExtCommand::Import { file, json } => {
            let connection = connect(global)?;
            let outcome = block_on(connection.import(&file))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&outcome.report)?);
            } else {
                print!("{}", describe_report(&outcome.report));
            }
            match outcome.refused {
                Some(refusal) => bail!("{}: {}", file.display(), refusal.message),
                None => Ok(()),
            }
        }
        ExtCommand::List { json } => {
            let connection = connect(global)?;
            let list = block_on(connection.list())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            let rows = table::rows(&list);
            if rows.is_empty() {
                println!("no extension packages installed");
                return Ok(());
            }
            let preferred = ["name", "packageVersion", "version", "status", "vendor"];
            let columns = table::columns(&list, &rows, &preferred);
            let cell = |column: &str, value: Option<&Value>| {
                let text = table::cell(value);
                // A digest is long; its first 12 digits name it well enough (--json has all).
                match text.get(..12) {
                    Some(short) if column == "sha256" && text.len() > 12 => format!("{short}…"),
                    _ => text,
                }
            };
            print!("{}", table::render_rows(&columns, &rows, cell));
            Ok(())
        }
        ExtCommand::Delete { name } => {
            let connection = connect(global)?;
            block_on(connection.delete(&name))?;
            println!("deleted {name}");
            Ok(())
        }
    }
}

/// What `ext pack` prints: what it wrote, one fact a line.
pub fn describe_pack(report: &PackReport) -> String {
    let m = &report.metadata;
    let mut out = format!("wrote {}\n", report.output.display());
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("  {label:<8} {value}\n"));
    };
    line("package", format!("{} {}", m.name, m.version));
    line("target", report.target.clone());
    line("library", report.library.file.clone());
    line("from", report.library_source.display().to_string());
    line("sha256", report.library.sha256.to_hex());
    line("abi", report.library.abi_version.to_string());
    line(
        "size",
        format!(
            "{} bytes (library), {} bytes (package)",
            report.library_size, report.package_size
        ),
    );
    line("zip", format!("sha256 {}", report.package_sha256));
    if let Some(key) = &report.signed_by {
        line("signed", format!("by {}", hex::encode(key.0)));
    }
    out
}

/// The import report as a table: name, version, status (ok, failure, warning), message.
pub fn describe_report(report: &Value) -> String {
    let rows = table::rows(report);
    if rows.is_empty() {
        return "the server returned no report rows\n".to_owned();
    }
    let header: Vec<String> = ["name", "version", "status", "message"]
        .map(str::to_owned)
        .to_vec();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let status = match row.get("extensionReportStatus") {
                Some(Value::Number(n)) if n.as_i64() == Some(0) => "ok".to_owned(),
                Some(Value::Number(n)) if n.as_i64() == Some(1) => "failure".to_owned(),
                Some(Value::Number(n)) if n.as_i64() == Some(2) => "warning".to_owned(),
                other => table::cell(other),
            };
            vec![
                table::cell(row.get("name")),
                table::cell(row.get("version").or_else(|| row.get("packageVersion"))),
                status,
                table::cell(row.get("reportMessage")),
            ]
        })
        .collect();
    table::render(&header, &body)
}
