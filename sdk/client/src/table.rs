//! Plain-text tables of InfoTable rows, for a terminal: a header line, then one line per row,
//! columns separated by two spaces and padded to their widest cell (the last column is not
//! padded). Cells are single-line: control characters become spaces.

use serde_json::Value;

/// The columns of an InfoTable: its `dataShape.fieldDefinitions` in order when present, else
/// the keys of its rows in first-seen order; `preferred` columns that exist come first.
pub fn columns(table: &Value, rows: &[Value], preferred: &[&str]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut add = |key: &str| {
        if !found.iter().any(|k| k == key) {
            found.push(key.to_owned());
        }
    };
    if let Some(defs) = table
        .pointer("/dataShape/fieldDefinitions")
        .and_then(Value::as_object)
    {
        let mut ordered: Vec<(&String, i64)> = defs
            .iter()
            .map(|(name, def)| {
                let order = def.get("ordinal").and_then(Value::as_i64).unwrap_or(0);
                (name, order)
            })
            .collect();
        ordered.sort_by_key(|(_, order)| *order);
        for (name, _) in ordered {
            add(name);
        }
    }
    for row in rows {
        if let Some(obj) = row.as_object() {
            for key in obj.keys() {
                add(key);
            }
        }
    }
    let mut columns: Vec<String> = preferred
        .iter()
        .filter(|p| found.iter().any(|f| f == *p))
        .map(|p| (*p).to_owned())
        .collect();
    columns.extend(
        found
            .into_iter()
            .filter(|f| !preferred.contains(&f.as_str())),
    );
    columns
}

/// The rows of an InfoTable (`{"rows": [...]}`), or of a bare array of rows.
pub fn rows(table: &Value) -> Vec<Value> {
    match table {
        Value::Array(rows) => rows.clone(),
        other => other
            .get("rows")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    }
}

/// A cell's text: strings as they are, `null` as empty, anything else as compact JSON.
pub fn cell(value: Option<&Value>) -> String {
    let text = match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Renders `header` and `body` (rows of cells) as a table, ending with a newline.
pub fn render(header: &[String], body: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in body {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(body.iter().map(Vec::as_slice)) {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            if i + 1 < row.len() {
                let pad = widths[i].saturating_sub(c.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Renders InfoTable rows under `columns`, with `format` turning a column's value into a cell.
pub fn render_rows(
    columns: &[String],
    rows: &[Value],
    format: impl Fn(&str, Option<&Value>) -> String,
) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| format(c, row.get(c))).collect())
        .collect();
    render(columns, &body)
}

/// A time in ms since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (Howard Hinnant's algorithm), valid for the whole i64 range of ms.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00");
        assert_eq!(timestamp(1_709_210_096_789), "2024-02-29 12:34:56");
        assert_eq!(timestamp(-1000), "1969-12-31 23:59:59");
        let _ = timestamp(i64::MAX);
        let _ = timestamp(i64::MIN);
    }

    #[test]
    fn columns_follow_the_data_shape_then_the_rows_with_preferred_first() {
        let table = json!({
            "dataShape": {"fieldDefinitions": {
                "vendor": {"name": "vendor", "ordinal": 2},
                "name": {"name": "name", "ordinal": 1},
            }},
            "rows": [{"name": "A", "vendor": "V", "packageVersion": "1.0.0"}],
        });
        let rows = rows(&table);
        assert_eq!(
            columns(&table, &rows, &[]),
            ["name", "vendor", "packageVersion"]
        );
        assert_eq!(
            columns(&table, &rows, &["packageVersion", "missing"]),
            ["packageVersion", "name", "vendor"]
        );
    }

    #[test]
    fn tables_are_aligned_and_cells_single_line() {
        let header = vec!["name".to_owned(), "message".to_owned()];
        let body = vec![
            vec!["LongerName".to_owned(), "ok".to_owned()],
            vec!["A".to_owned(), cell(Some(&json!("two\nlines")))],
            vec!["B".to_owned(), cell(None)],
        ];
        assert_eq!(
            render(&header, &body),
            "name        message\nLongerName  ok\nA           two lines\nB\n"
        );
        assert_eq!(cell(Some(&json!({"a": 1}))), r#"{"a":1}"#);
        assert_eq!(cell(Some(&json!(3))), "3");
    }

    #[test]
    fn bare_arrays_are_rows_too() {
        assert_eq!(rows(&json!([{"a": 1}])).len(), 1);
        assert!(rows(&json!({"error": "x"})).is_empty());
    }
}
