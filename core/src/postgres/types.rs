//! Postgres types Kalla reads, and the Arrow type each one becomes.
//!
//! | Postgres | Arrow |
//! |---|---|
//! | `bool` | Boolean |
//! | `int2` / `int4` / `int8` | Int16 / Int32 / Int64 |
//! | `float4` / `float8` | Float32 / Float64 |
//! | `numeric(p,s)`, p ≤ 38 | Decimal128(p, s) |
//! | `numeric` (unconstrained) | Decimal128(38, 10): a value with more than 10 fractional digits or 28 integer digits, NaN or ±Infinity is an error naming the column, never rounded |
//! | `numeric(p,s)`, p > 38 or s outside 0..=p | Utf8 (the exact decimal text) |
//! | `text`, `varchar`, `char(n)` (padding kept), `name`, enums, `json` | Utf8 |
//! | `jsonb` | Utf8 (the JSON text) |
//! | `uuid` | Utf8 (lower-case hyphenated) |
//! | `bytea` | Binary |
//! | `date` | Date32 |
//! | `timestamp` / `timestamptz` | Timestamp(µs) / Timestamp(µs, "UTC") |
//! | `time` | Time64(µs) |
//! | `interval` | Interval(MonthDayNano) |
//! | one-dimensional arrays of the above | List |
//! | anything else (inet, point, ranges, …) | Utf8, read as the value's text form |
//!
//! Domains are read as their base type. `date`/`timestamp` `±infinity` are errors naming the column.

use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use serde::{Deserialize, Serialize};

/// Scale used for unconstrained `numeric` columns.
pub const UNCONSTRAINED_NUMERIC_SCALE: i8 = 10;
const MAX_DECIMAL128_PRECISION: i32 = 38;

/// How a column travels on the wire and which Arrow type it becomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric {
        precision: u8,
        scale: i8,
    },
    /// `text`, `varchar`, `bpchar`, `name`, `json`, enum labels: UTF-8 bytes on the wire.
    Text,
    Jsonb,
    Uuid,
    Bytea,
    Date,
    Timestamp,
    TimestampTz,
    Time,
    Interval,
    Array(Box<PgType>),
    /// A type without a binary decoder here: selected as `col::text`.
    TextCast,
}

/// Built-in type oids (stable across Postgres versions).
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

impl PgType {
    /// The type of a built-in scalar oid, with its type modifier (for `numeric`).
    pub fn from_builtin(type_oid: u32, typmod: i32) -> Option<Self> {
        Some(match type_oid {
            oid::BOOL => Self::Bool,
            oid::BYTEA => Self::Bytea,
            oid::NAME | oid::TEXT | oid::JSON | oid::BPCHAR | oid::VARCHAR => Self::Text,
            oid::INT8 => Self::Int8,
            oid::INT2 => Self::Int2,
            oid::INT4 => Self::Int4,
            oid::FLOAT4 => Self::Float4,
            oid::FLOAT8 => Self::Float8,
            oid::DATE => Self::Date,
            oid::TIME => Self::Time,
            oid::TIMESTAMP => Self::Timestamp,
            oid::TIMESTAMPTZ => Self::TimestampTz,
            oid::INTERVAL => Self::Interval,
            oid::NUMERIC => Self::numeric(typmod),
            oid::UUID => Self::Uuid,
            oid::JSONB => Self::Jsonb,
            _ => return None,
        })
    }

    /// `numeric` with type modifier `typmod` (-1 when unconstrained).
    fn numeric(typmod: i32) -> Self {
        if typmod < 4 {
            return Self::Numeric {
                precision: MAX_DECIMAL128_PRECISION as u8,
                scale: UNCONSTRAINED_NUMERIC_SCALE,
            };
        }
        let precision = ((typmod - 4) >> 16) & 0xffff;
        // The scale is an 11-bit signed field since Postgres 15.
        let scale = (((typmod - 4) & 0x7ff) ^ 1024) - 1024;
        if precision > MAX_DECIMAL128_PRECISION || !(0..=precision).contains(&scale) {
            return Self::TextCast;
        }
        Self::Numeric {
            precision: precision as u8,
            scale: scale as i8,
        }
    }

    /// The column's type when it is an array of `element`.
    pub fn array_of(element: PgType) -> Self {
        match element {
            Self::TextCast | Self::Array(_) => Self::TextCast,
            element => Self::Array(Box::new(element)),
        }
    }

    pub fn arrow_type(&self) -> DataType {
        match self {
            Self::Bool => DataType::Boolean,
            Self::Int2 => DataType::Int16,
            Self::Int4 => DataType::Int32,
            Self::Int8 => DataType::Int64,
            Self::Float4 => DataType::Float32,
            Self::Float8 => DataType::Float64,
            Self::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            Self::Text | Self::Jsonb | Self::Uuid | Self::TextCast => DataType::Utf8,
            Self::Bytea => DataType::Binary,
            Self::Date => DataType::Date32,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Self::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::Time => DataType::Time64(TimeUnit::Microsecond),
            Self::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
            Self::Array(element) => DataType::List(Field::new("item", element.arrow_type(), true).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_typmod(precision: i32, scale: i32) -> i32 {
        ((precision << 16) | (scale & 0x7ff)) + 4
    }

    #[test]
    fn numeric_typmods() {
        assert_eq!(
            PgType::numeric(numeric_typmod(15, 2)),
            PgType::Numeric {
                precision: 15,
                scale: 2
            }
        );
        assert_eq!(
            PgType::numeric(-1),
            PgType::Numeric {
                precision: 38,
                scale: UNCONSTRAINED_NUMERIC_SCALE
            }
        );
        assert_eq!(PgType::numeric(numeric_typmod(50, 2)), PgType::TextCast);
        assert_eq!(PgType::numeric(numeric_typmod(5, -2)), PgType::TextCast);
        assert_eq!(PgType::numeric(numeric_typmod(2, 4)), PgType::TextCast);
    }

    #[test]
    fn arrays_of_unsupported_elements_are_read_as_text() {
        assert_eq!(PgType::array_of(PgType::TextCast), PgType::TextCast);
        assert_eq!(
            PgType::array_of(PgType::Int4).arrow_type(),
            DataType::List(Field::new("item", DataType::Int32, true).into())
        );
    }
}
