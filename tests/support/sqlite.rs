//! SQLite, as D1 runs the core's statements: an in-memory database with the project's
//! migrations, and a statement's rows as JSON objects, as the Worker reads them from D1
//! (`tests/batch.rs`, `tests/export.rs`).

use llm_distiller::sql::{Group, Param, Statement};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

pub struct Db(Connection);

impl Db {
    /// A database with every migration applied, in order.
    pub fn new() -> Db {
        let connection = Connection::open_in_memory().unwrap();
        let mut migrations: Vec<_> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
        migrations.sort();
        for migration in migrations {
            connection
                .execute_batch(&std::fs::read_to_string(migration).unwrap())
                .unwrap();
        }
        Db(connection)
    }

    /// Runs one statement: the rows it returns, as JSON objects.
    pub fn run(&self, statement: &Statement) -> Vec<Value> {
        run_on(&self.0, statement)
    }

    /// Runs one statement: the rows it returns, as `T` (as `store::rows` reads them).
    pub fn rows<T: DeserializeOwned>(&self, statement: &Statement) -> Vec<T> {
        self.run(statement)
            .into_iter()
            .map(|row| serde_json::from_value(row).unwrap())
            .collect()
    }

    /// Runs a group as one transaction (a D1 batch): each statement's rows.
    pub fn group(&mut self, group: &Group) -> Vec<Vec<Value>> {
        let tx = self.0.transaction().unwrap();
        let results = group.iter().map(|s| run_on(&tx, s)).collect();
        tx.commit().unwrap();
        results
    }

    /// The first column of the first row `sql` returns (`null` for none).
    pub fn value(&self, sql: &str) -> Value {
        self.run(&Statement::new(sql, vec![]))
            .first()
            .and_then(|row| row.as_object().and_then(|o| o.values().next().cloned()))
            .unwrap_or(Value::Null)
    }
}

fn run_on(connection: &Connection, statement: &Statement) -> Vec<Value> {
    let mut prepared = connection
        .prepare(&statement.sql)
        .unwrap_or_else(|e| panic!("{e}: {}", statement.sql));
    let names: Vec<String> = prepared.column_names().map(|n| n.to_string()).collect();
    let params: Vec<rusqlite::types::Value> = statement
        .params
        .iter()
        .map(|p| match p {
            Param::Null => rusqlite::types::Value::Null,
            Param::Text(t) => rusqlite::types::Value::Text(t.clone()),
            Param::Number(n) => rusqlite::types::Value::Real(*n),
        })
        .collect();
    let mut rows = prepared.query(rusqlite::params_from_iter(params)).unwrap();
    let mut out = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        let mut object = Map::new();
        for (i, name) in names.iter().enumerate() {
            let value = match row.get_ref(i).unwrap() {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => json!(n),
                ValueRef::Real(n) => json!(n),
                ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                ValueRef::Blob(_) => Value::Null,
            };
            object.insert(name.clone(), value);
        }
        out.push(Value::Object(object));
    }
    out
}
