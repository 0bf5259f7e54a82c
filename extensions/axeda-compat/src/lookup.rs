//! `FindThingByModelAndSerial`: an Axeda device by its model and serial number, as Axeda
//! scripts address devices.
//!
//! The candidates are the Things of `AxedaBaseModel` (and of the templates derived from it);
//! only those the caller can see count, so an answer never reveals a Thing the caller could not
//! list (a Thing they cannot see is "none", exactly like a missing one).

use crate::AXEDA_BASE_MODEL;
use thingport_sdk::protocol::{Caller, ErrorKind};
use thingport_sdk::{Error, Host, Value};

/// The name of the one visible Axeda device with this model and serial number: `404` if none,
/// `409` naming them if several.
pub fn find(host: &Host, caller: &Caller, model: &str, serial: &str) -> Result<String, Error> {
    for (parameter, value) in [("modelNumber", model), ("serialNumber", serial)] {
        if value.is_empty() {
            return Err(Error::bad_request(format!(
                "parameter '{parameter}' must not be empty"
            )));
        }
    }
    let mut found = Vec::new();
    for thing in host.things_of_template(AXEDA_BASE_MODEL)? {
        let values = match host.get_properties(&thing) {
            Ok(values) => values,
            // Deleted since it was listed.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let is =
            |property: &str, want: &str| values.get(property).and_then(Value::as_str) == Some(want);
        if !(is("modelNumber", model) && is("serialNumber", serial)) {
            continue;
        }
        if caller.admin || host.check_permission(&caller.name, "Things", &thing, "Visible", "")? {
            found.push(thing);
        }
    }
    match found.len() {
        0 => Err(Error::not_found(format!(
            "no {AXEDA_BASE_MODEL} Thing has modelNumber '{model}' and serialNumber '{serial}'"
        ))),
        1 => Ok(found.remove(0)),
        _ => Err(Error::conflict(format!(
            "{} Things have modelNumber '{model}' and serialNumber '{serial}': {}",
            found.len(),
            found.join(", ")
        ))),
    }
}
