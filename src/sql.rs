//! SQL as data: a statement's text and the values bound to it, for D1 (SQLite).
//!
//! What the Worker stores and reads is decided here in the core, down to the statements: the
//! Worker only binds these values to D1 and runs them (a [`Group`] as one D1 batch, which
//! D1 runs as a transaction), and the native tests run the very same statements against
//! SQLite with the project's migrations. No user data is ever part of an SQL text: it
//! travels as bound values only. D1 takes at most 100 bound values per statement and
//! 100 KB of SQL text; every statement here stays well within both.

use serde::Serialize;

/// A value bound to a statement.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Param {
    /// SQL `NULL`.
    Null,
    /// A text.
    Text(String),
    /// A number. Integers travel as numbers too (exact up to 2^53): workers-rs binds
    /// integers as 32-bit, which a time in milliseconds overflows.
    Number(f64),
}

impl From<&str> for Param {
    fn from(text: &str) -> Self {
        Param::Text(text.to_string())
    }
}

impl From<String> for Param {
    fn from(text: String) -> Self {
        Param::Text(text)
    }
}

impl From<&String> for Param {
    fn from(text: &String) -> Self {
        Param::Text(text.clone())
    }
}

impl From<f64> for Param {
    fn from(number: f64) -> Self {
        Param::Number(number)
    }
}

impl From<u64> for Param {
    fn from(number: u64) -> Self {
        Param::Number(number as f64)
    }
}

impl From<usize> for Param {
    fn from(number: usize) -> Self {
        Param::Number(number as f64)
    }
}

impl From<bool> for Param {
    fn from(flag: bool) -> Self {
        Param::Number(if flag { 1.0 } else { 0.0 })
    }
}

impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(value: Option<T>) -> Self {
        value.map_or(Param::Null, Into::into)
    }
}

/// One statement: its text, with numbered placeholders (`?1`, `?2`, …), and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    /// The SQL text.
    pub sql: String,
    /// The values of `?1`, `?2`, … in order.
    pub params: Vec<Param>,
}

impl Statement {
    /// `sql` with `params`.
    pub fn new(sql: impl Into<String>, params: Vec<Param>) -> Self {
        Statement {
            sql: sql.into(),
            params,
        }
    }
}

/// Statements that run together, in order, as one transaction (a D1 batch): all of them
/// or none.
pub type Group = Vec<Statement>;

/// `count` numbered placeholders from `?first` on, comma-separated: `?3, ?4, ?5`.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_from_the_first() {
        assert_eq!(placeholders(3, 3), "?3, ?4, ?5");
        assert_eq!(placeholders(1, 0), "");
    }

    #[test]
    fn values_convert() {
        assert_eq!(Param::from(Some("a")), Param::Text("a".into()));
        assert_eq!(Param::from(None::<String>), Param::Null);
        assert_eq!(Param::from(true), Param::Number(1.0));
        assert_eq!(Param::from(7u64), Param::Number(7.0));
    }
}
