//! Prepared statements without server state: the handle carries the statement and, once bound,
//! its parameter values (as Arrow IPC), so nothing waits on the runner to expire and any runner
//! can run it. A handle holds only what its client sent, and it is authorized and planned again
//! on every use, so a forged one gains nothing its token could not do with plain SQL.

use std::collections::HashMap;
use std::io::Cursor;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::ScalarValue;
use prost::Message;
use tonic::Status;

/// Why a bind of other than one row of values is refused.
pub const TOO_MANY_ROWS: &str = "bind exactly one row of parameter values; run the statement once per row";

/// What a prepared statement's handle holds.
#[derive(Clone, PartialEq, Message)]
pub struct Handle {
    #[prost(string, tag = "1")]
    pub sql: String,
    /// One row of parameter values as an Arrow IPC stream; empty until bound.
    #[prost(bytes = "vec", tag = "2")]
    parameters: Vec<u8>,
}

impl Handle {
    pub fn new(sql: String) -> Self {
        Self {
            sql,
            parameters: Vec::new(),
        }
    }

    pub fn to_bytes(&self) -> prost::bytes::Bytes {
        self.encode_to_vec().into()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Status> {
        Self::decode(bytes).map_err(|_| not_ours())
    }

    /// This statement with `values` (one row, a column per parameter) bound.
    pub fn bind(self, values: &RecordBatch) -> Result<Self, Status> {
        if values.num_rows() != 1 {
            return Err(Status::invalid_argument(TOO_MANY_ROWS));
        }
        let mut parameters = Vec::new();
        let mut writer = StreamWriter::try_new(&mut parameters, &values.schema()).map_err(internal)?;
        writer.write(values).map_err(internal)?;
        writer.finish().map_err(internal)?;
        drop(writer);
        Ok(Self {
            sql: self.sql,
            parameters,
        })
    }

    /// The bound row of values, if any was bound.
    pub fn values(&self) -> Result<Option<RecordBatch>, Status> {
        if self.parameters.is_empty() {
            return Ok(None);
        }
        let mut reader =
            StreamReader::try_new(Cursor::new(&self.parameters), None).map_err(|_| not_ours())?;
        match reader.next() {
            Some(Ok(batch)) => Ok(Some(batch)),
            _ => Err(not_ours()),
        }
    }
}

/// The positions of a statement's placeholders (`$1` is 0), or why they cannot be bound.
fn positions(types: &HashMap<String, Option<DataType>>) -> Result<Vec<(usize, Option<DataType>)>, Status> {
    let mut positions = Vec::with_capacity(types.len());
    for (name, data_type) in types {
        let position = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "parameter {name} is not positional: number parameters $1, $2, …"
                ))
            })?;
        positions.push((position - 1, data_type.clone()));
    }
    positions.sort_by_key(|(position, _)| *position);
    if let Some(gap) = positions.iter().enumerate().find(|(i, (p, _))| i != p) {
        return Err(Status::invalid_argument(format!(
            "parameter ${} is missing: number parameters $1, $2, … without gaps",
            gap.0 + 1
        )));
    }
    Ok(positions)
}

/// The schema clients bind parameters against: `$1`, `$2`, … typed as the statement uses them
/// (`Null` where the statement does not tell).
pub fn parameter_schema(types: &HashMap<String, Option<DataType>>) -> Result<Schema, Status> {
    let fields: Vec<Field> = positions(types)?
        .into_iter()
        .map(|(position, data_type)| {
            Field::new(
                format!("${}", position + 1),
                data_type.unwrap_or(DataType::Null),
                true,
            )
        })
        .collect();
    Ok(Schema::new(fields))
}

/// The bound row's values in placeholder order, each cast to the type its placeholder has.
pub fn parameter_values(
    row: &RecordBatch,
    types: &HashMap<String, Option<DataType>>,
) -> Result<Vec<ScalarValue>, Status> {
    let positions = positions(types)?;
    if row.num_columns() != positions.len() {
        return Err(Status::invalid_argument(format!(
            "the statement has {} parameters; {} values were bound",
            positions.len(),
            row.num_columns()
        )));
    }
    positions
        .into_iter()
        .map(|(position, data_type)| {
            let value = ScalarValue::try_from_array(row.column(position), 0).map_err(internal)?;
            match data_type {
                Some(data_type) if value.data_type() != data_type => value.cast_to(&data_type).map_err(|e| {
                    Status::invalid_argument(format!(
                        "parameter ${}: {value} is not a {data_type}: {e}",
                        position + 1
                    ))
                }),
                _ => Ok(value),
            }
        })
        .collect()
}

fn not_ours() -> Status {
    Status::invalid_argument("the prepared statement handle is not one this runner issued")
}

fn internal(error: impl std::fmt::Display) -> Status {
    Status::internal(error.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};

    use super::*;

    fn types(entries: &[(&str, Option<DataType>)]) -> HashMap<String, Option<DataType>> {
        entries.iter().map(|(n, t)| (n.to_string(), t.clone())).collect()
    }

    fn row(values: Vec<(&str, Arc<dyn datafusion::arrow::array::Array>)>) -> RecordBatch {
        RecordBatch::try_from_iter(values).unwrap()
    }

    #[test]
    fn a_handle_carries_its_statement_and_bound_values() {
        let handle = Handle::new("SELECT $1".into());
        let again = Handle::from_bytes(&handle.to_bytes()).unwrap();
        assert_eq!((again.sql.as_str(), again.values().unwrap()), ("SELECT $1", None));
        let values = row(vec![("0", Arc::new(Int64Array::from(vec![7])))]);
        let bound = Handle::from_bytes(&again.bind(&values).unwrap().to_bytes()).unwrap();
        assert_eq!(bound.values().unwrap(), Some(values));
        assert_eq!(
            Handle::from_bytes(b"\xff\xff").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let two_rows = row(vec![("0", Arc::new(Int64Array::from(vec![1, 2])))]);
        assert!(Handle::new("SELECT $1".into()).bind(&two_rows).is_err());
    }

    #[test]
    fn values_are_cast_to_their_placeholders_types_in_order() {
        let placeholders = types(&[("$2", Some(DataType::Int32)), ("$1", None)]);
        let schema = parameter_schema(&placeholders).unwrap();
        assert_eq!(schema.field(0).name(), "$1");
        assert_eq!(schema.field(1).data_type(), &DataType::Int32);
        let bound = row(vec![
            ("a", Arc::new(StringArray::from(vec!["x"]))),
            ("b", Arc::new(Int64Array::from(vec![5]))),
        ]);
        let values = parameter_values(&bound, &placeholders).unwrap();
        assert_eq!(values, [ScalarValue::from("x"), ScalarValue::Int32(Some(5))]);

        let wrong = row(vec![
            ("a", Arc::new(StringArray::from(vec!["x"]))),
            ("b", Arc::new(StringArray::from(vec!["five"]))),
        ]);
        let refused = parameter_values(&wrong, &placeholders).unwrap_err();
        assert!(
            refused.message().starts_with("parameter $2: five is not a Int32"),
            "{refused}"
        );
        let short = row(vec![("a", Arc::new(StringArray::from(vec!["x"])))]);
        assert!(parameter_values(&short, &placeholders).is_err());
        assert!(parameter_schema(&types(&[("$2", None)])).is_err());
        assert!(parameter_schema(&types(&[("$name", None)])).is_err());
    }
}
