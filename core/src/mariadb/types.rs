//! MariaDB (and MySQL) column types Kalla reads, and the Arrow type each one becomes.
//!
//! | MariaDB | Arrow |
//! |---|---|
//! | `TINYINT` / `SMALLINT` / `MEDIUMINT`, `INT` / `BIGINT` | Int8 / Int16 / Int32 / Int32 / Int64 |
//! | the same `UNSIGNED` (`BIGINT UNSIGNED` up to 2^64−1 included) | UInt8 / UInt16 / UInt32 / UInt32 / UInt64 |
//! | `DECIMAL(p,s)`, p ≤ 38 | Decimal128(p, s) |
//! | `DECIMAL(p,s)`, p > 38 (up to 65) | Utf8, the exact decimal text (as Postgres's wide `numeric`) |
//! | `FLOAT` / `DOUBLE` | Float32 / Float64 |
//! | `DATE` | Date32 |
//! | `DATETIME(p)` | Timestamp(µs), no time zone: the wall-clock value as stored |
//! | `TIMESTAMP(p)` | Timestamp(µs, "UTC"): sessions run with `time_zone = '+00:00'` |
//! | `TIME(p)` (−838:59:59 to 838:59:59) | Duration(µs) |
//! | `YEAR` | UInt16 |
//! | `BIT(n)` | UInt64 |
//! | `CHAR`, `VARCHAR`, `TEXT`s, `ENUM`, `SET`, `JSON` (a `LONGTEXT` in MariaDB) | Utf8 (the collation is kept in the column's SQL type) |
//! | `BINARY`, `VARBINARY`, `BLOB`s, spatial types | Binary (spatial values in MariaDB's internal WKB form) |
//! | `UUID`, `INET4`, `INET6` | Utf8, read as the value's text form |
//!
//! A zero or partly zero date (`0000-00-00`, `2024-00-10`) has no Arrow value: reading one is an
//! error naming the table and column, never a NULL.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};

const MAX_DECIMAL128_PRECISION: u64 = 38;

/// How a column is read and which Arrow type it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MariaType {
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// A `DECIMAL` wider than Decimal128 holds: its exact text.
    DecimalText,
    Date,
    DateTime,
    Timestamp,
    Time,
    Year,
    Bit,
    Text,
    Binary,
    /// A type read through `CAST(… AS CHAR)`.
    TextCast,
}

impl MariaType {
    /// The type of a column as `information_schema.COLUMNS` describes it: its `DATA_TYPE`,
    /// `COLUMN_TYPE` (which says `unsigned`) and `NUMERIC_PRECISION`/`NUMERIC_SCALE`.
    pub fn of_column(data_type: &str, column_type: &str, precision: Option<u64>, scale: Option<u64>) -> Self {
        let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
        let integer = |signed: Self, unsigned_type: Self| if unsigned { unsigned_type } else { signed };
        match data_type.to_ascii_lowercase().as_str() {
            "tinyint" => integer(Self::Int8, Self::UInt8),
            "smallint" => integer(Self::Int16, Self::UInt16),
            "mediumint" | "int" | "integer" => integer(Self::Int32, Self::UInt32),
            "bigint" => integer(Self::Int64, Self::UInt64),
            "decimal" | "numeric" => Self::decimal(precision.unwrap_or(10), scale.unwrap_or(0)),
            "float" => Self::Float32,
            "double" | "real" => Self::Float64,
            "date" => Self::Date,
            "datetime" => Self::DateTime,
            "timestamp" => Self::Timestamp,
            "time" => Self::Time,
            "year" => Self::Year,
            "bit" => Self::Bit,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set"
            | "json" => Self::Text,
            "uuid" | "inet4" | "inet6" => Self::TextCast,
            _ => Self::Binary,
        }
    }

    fn decimal(precision: u64, scale: u64) -> Self {
        if precision > MAX_DECIMAL128_PRECISION || scale > precision {
            return Self::DecimalText;
        }
        Self::Decimal {
            precision: precision as u8,
            scale: scale as i8,
        }
    }

    /// Whether values are whole numbers a key range can split.
    pub fn is_integer(&self) -> bool {
        matches!(
            self,
            Self::Int8
                | Self::Int16
                | Self::Int32
                | Self::Int64
                | Self::UInt8
                | Self::UInt16
                | Self::UInt32
                | Self::UInt64
        )
    }

    pub fn arrow_type(&self) -> DataType {
        match self {
            Self::Int8 => DataType::Int8,
            Self::Int16 => DataType::Int16,
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::UInt8 => DataType::UInt8,
            Self::UInt16 | Self::Year => DataType::UInt16,
            Self::UInt32 => DataType::UInt32,
            Self::UInt64 | Self::Bit => DataType::UInt64,
            Self::Float32 => DataType::Float32,
            Self::Float64 => DataType::Float64,
            Self::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            Self::DecimalText | Self::Text | Self::TextCast => DataType::Utf8,
            Self::Date => DataType::Date32,
            Self::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::Time => DataType::Duration(TimeUnit::Microsecond),
            Self::Binary => DataType::Binary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(data_type: &str, column_type: &str) -> MariaType {
        MariaType::of_column(data_type, column_type, None, None)
    }

    #[test]
    fn integers_keep_their_sign() {
        assert_eq!(of("bigint", "bigint(20) unsigned"), MariaType::UInt64);
        assert_eq!(of("bigint", "bigint(20)"), MariaType::Int64);
        assert_eq!(
            of("mediumint", "mediumint(8) unsigned").arrow_type(),
            DataType::UInt32
        );
        assert_eq!(of("tinyint", "tinyint(1)"), MariaType::Int8);
    }

    #[test]
    fn decimals_beyond_decimal128_are_exact_text() {
        let decimal = |p, s| MariaType::of_column("decimal", "decimal", Some(p), Some(s));
        assert_eq!(decimal(12, 2).arrow_type(), DataType::Decimal128(12, 2));
        assert_eq!(decimal(38, 38).arrow_type(), DataType::Decimal128(38, 38));
        assert_eq!(decimal(65, 30), MariaType::DecimalText);
    }

    #[test]
    fn text_json_and_binaries() {
        assert_eq!(of("longtext", "longtext"), MariaType::Text);
        assert_eq!(of("enum", "enum('a','b')"), MariaType::Text);
        assert_eq!(of("blob", "blob"), MariaType::Binary);
        assert_eq!(of("point", "point"), MariaType::Binary);
        assert_eq!(of("uuid", "uuid"), MariaType::TextCast);
        assert_eq!(
            of("time", "time(6)").arrow_type(),
            DataType::Duration(TimeUnit::Microsecond)
        );
    }
}
