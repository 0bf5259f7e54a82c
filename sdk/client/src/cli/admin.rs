//! What `things`, `sessions` and `audit` print: tables of the server's InfoTables, with
//! timestamps (ms since the epoch) shown as UTC times.

use super::AuditArgs;
use crate::table;
use serde_json::{json, Map, Value};

/// `thingport things`: name, template, enabled (and isConnected when the server includes it).
pub fn print_things(things: &Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(things)?);
        return Ok(());
    }
    let rows = table::rows(things);
    if rows.is_empty() {
        println!("no Things");
        return Ok(());
    }
    let mut columns: Vec<String> = ["name", "thingTemplate", "enabled"]
        .map(str::to_owned)
        .to_vec();
    for optional in ["isConnected", "description"] {
        if rows.iter().any(|r| r.get(optional).is_some()) {
            columns.push(optional.to_owned());
        }
    }
    print!(
        "{}",
        table::render_rows(&columns, &rows, |_, v| table::cell(v))
    );
    Ok(())
}

/// `thingport sessions`: one line per session, newest data as the server orders it.
pub fn print_sessions(sessions: &Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(sessions)?);
        return Ok(());
    }
    print!("{}", describe_sessions(sessions));
    Ok(())
}

/// The sessions table: sessionId, agentDevice, remoteEndpoint, status, terminationCause,
/// createdBy, bytes, created.
pub fn describe_sessions(sessions: &Value) -> String {
    let rows = table::rows(sessions);
    if rows.is_empty() {
        return "no remote sessions\n".to_owned();
    }
    let header: Vec<String> = [
        "sessionId",
        "agentDevice",
        "remoteEndpoint",
        "status",
        "terminationCause",
        "createdBy",
        "bytes",
        "created",
    ]
    .map(str::to_owned)
    .to_vec();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                table::cell(row.get("sessionId")),
                table::cell(row.get("agentDevice")),
                table::cell(row.get("remoteEndpoint")),
                table::cell(row.get("status")),
                table::cell(row.get("terminationCause")),
                table::cell(row.get("createdBy")),
                table::cell(row.get("bytesTransferred")),
                time_cell(row.get("createdTime")),
            ]
        })
        .collect();
    table::render(&header, &body)
}

/// The parameters of `QueryAuditHistory` from the flags (absent ones left out).
pub fn audit_params(args: &AuditArgs) -> Value {
    let mut params = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            params.insert(key.to_owned(), v);
        }
    };
    put(
        "category",
        args.category
            .as_ref()
            .map(|c| json!(c.to_ascii_uppercase())),
    );
    put("principal", args.principal.as_ref().map(|p| json!(p)));
    put("entity", args.entity.as_ref().map(|e| json!(e)));
    put("limit", args.limit.map(|l| json!(l)));
    Value::Object(params)
}

/// `thingport audit`: time, category, principal, entity, message, source IP.
pub fn print_audit(entries: &Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(entries)?);
        return Ok(());
    }
    let rows = table::rows(entries);
    if rows.is_empty() {
        println!("no audit entries");
        return Ok(());
    }
    let columns: Vec<String> = [
        "timestamp",
        "category",
        "principal",
        "entity",
        "message",
        "sourceIp",
    ]
    .map(str::to_owned)
    .to_vec();
    let cell = |column: &str, value: Option<&Value>| match column {
        "timestamp" => time_cell(value),
        _ => table::cell(value),
    };
    print!("{}", table::render_rows(&columns, &rows, cell));
    Ok(())
}

/// A timestamp cell: ms since the epoch as `YYYY-MM-DD HH:MM:SS` UTC, anything else as it is.
fn time_cell(value: Option<&Value>) -> String {
    match value.and_then(Value::as_i64) {
        Some(ms) => table::timestamp(ms),
        None => table::cell(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_print_as_a_table_with_times() {
        let t = json!({"rows": [{"sessionId": "s-1", "agentDevice": "gw-1",
            "remoteEndpoint": "ssh", "status": "TERMINATED", "terminationCause": "USER_SHUTDOWN",
            "createdBy": "Administrator", "bytesTransferred": 1234, "createdTime": 0}]});
        let out = describe_sessions(&t);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].starts_with("sessionId"), "{out}");
        assert!(lines[1].contains("USER_SHUTDOWN"), "{out}");
        assert!(lines[1].ends_with("1970-01-01 00:00:00"), "{out}");
        assert_eq!(
            describe_sessions(&json!({"rows": []})),
            "no remote sessions\n"
        );
    }

    #[test]
    fn audit_parameters_leave_out_what_was_not_asked() {
        let args = AuditArgs {
            category: Some("remote_access".into()),
            principal: None,
            entity: None,
            limit: Some(5),
            json: false,
        };
        assert_eq!(
            audit_params(&args),
            json!({"category": "REMOTE_ACCESS", "limit": 5})
        );
    }
}
