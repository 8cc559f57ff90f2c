//! `exportRecord`: the row-to-record mapping of the Worker's `GET /v1/export`
//! ([`crate::export`]), for answers a user keeps, so that both shape records alike.

use js_sys::Object;
use wasm_bindgen::prelude::*;

use super::convert::{from_js, from_js_or_default, to_js};
use super::errors::js_error;
use crate::error::Error;
use crate::export::{export_record, ExportOptions, ExportRow};

/// The record of `row` as the export writes it; `null` when the export's rules leave the
/// row out; throws when its request cannot be read.
#[wasm_bindgen(js_name = exportRecord, skip_typescript)]
pub fn js_export_record(row: JsValue, options: Option<Object>) -> Result<JsValue, JsValue> {
    let row: ExportRow = from_js(row, "row")?;
    let options: ExportOptions = from_js_or_default(options, "options")?;
    match export_record(&row, &options) {
        Ok(record) => to_js(&record),
        Err(skip) if skip.is_by_rule() => Ok(JsValue::NULL),
        Err(skip) => Err(js_error(&Error::config("row.request", skip.to_string()))),
    }
}
