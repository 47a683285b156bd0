//! Connection strings of the three SQL dialects. Besides not panicking, what is said about
//! a string never repeats its password: the fuzzer's password is a marker it must not find.
#![no_main]

use key_connector::config::sql_connection::{self, SqlDialect};
use libfuzzer_sys::fuzz_target;

const MARKER: &str = "Zq8Marker";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for dialect in [SqlDialect::PostgreSql, SqlDialect::MySql, SqlDialect::SqlServer] {
        let _ = sql_connection::parse(dialect, text);
        // The input with a password holding the marker split by an unquoted `;`.
        let with_password = format!("{text};Password=a{MARKER};{MARKER}b=1;{MARKER}");
        let said = match sql_connection::parse(dialect, &with_password) {
            Ok(connection) => connection.warnings.join("\n"),
            Err(error) => error,
        };
        if !text.contains(MARKER) {
            assert!(!said.contains(MARKER), "{dialect:?} repeated a password piece: {said}");
        }
    }
});
