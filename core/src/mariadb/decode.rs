//! MariaDB's text-protocol values decoded into Arrow arrays, a batch at a time.
//!
//! Scans read with the text protocol: every value arrives as MariaDB prints it (decimals and
//! temporal values as exact text, integers in decimal, `BIT` as its big-endian bytes, `FLOAT`
//! cast to a `DOUBLE`), which is also how a zero date can be told from a NULL and refused.

use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, Date32Builder, Decimal128Builder, DurationMicrosecondBuilder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, RecordBatch, RecordBatchOptions,
    StringBuilder, TimestampMicrosecondBuilder, UInt8Builder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use thiserror::Error;

use super::types::MariaType;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;
/// Days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
const UNIX_EPOCH_FROM_CE: i32 = 719_163;

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("reading {table}: column {column} holds {value:?}: {reason}")]
    Value {
        table: String,
        column: String,
        value: String,
        reason: String,
    },
    #[error("reading {table}: a row has {got} values, the scan {expected} columns")]
    Shape {
        table: String,
        got: usize,
        expected: usize,
    },
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

/// One column's builder, by how its values are written.
enum Builder {
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    UInt8(UInt8Builder),
    UInt16(UInt16Builder),
    UInt32(UInt32Builder),
    UInt64(UInt64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder, u32),
    Text(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Time(DurationMicrosecondBuilder),
    Bit(UInt64Builder),
}

impl Builder {
    fn new(maria_type: MariaType, capacity: usize) -> Self {
        match maria_type {
            MariaType::Int8 => Self::Int8(Int8Builder::with_capacity(capacity)),
            MariaType::Int16 => Self::Int16(Int16Builder::with_capacity(capacity)),
            MariaType::Int32 => Self::Int32(Int32Builder::with_capacity(capacity)),
            MariaType::Int64 => Self::Int64(Int64Builder::with_capacity(capacity)),
            MariaType::UInt8 => Self::UInt8(UInt8Builder::with_capacity(capacity)),
            MariaType::UInt16 | MariaType::Year => Self::UInt16(UInt16Builder::with_capacity(capacity)),
            MariaType::UInt32 => Self::UInt32(UInt32Builder::with_capacity(capacity)),
            MariaType::UInt64 => Self::UInt64(UInt64Builder::with_capacity(capacity)),
            MariaType::Float32 => Self::Float32(Float32Builder::with_capacity(capacity)),
            MariaType::Float64 => Self::Float64(Float64Builder::with_capacity(capacity)),
            MariaType::Decimal { precision, scale } => Self::Decimal(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(precision, scale)
                    .expect("precision ≤ 38 and 0 ≤ scale ≤ precision, as MariaType::of_column makes them"),
                scale as u32,
            ),
            MariaType::DecimalText | MariaType::Text | MariaType::TextCast => {
                Self::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            MariaType::Binary => Self::Binary(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            MariaType::Date => Self::Date(Date32Builder::with_capacity(capacity)),
            MariaType::DateTime => Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity)),
            MariaType::Timestamp => {
                Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"))
            }
            MariaType::Time => Self::Time(DurationMicrosecondBuilder::with_capacity(capacity)),
            MariaType::Bit => Self::Bit(UInt64Builder::with_capacity(capacity)),
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Int8(b) => b.append_null(),
            Self::Int16(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::UInt8(b) => b.append_null(),
            Self::UInt16(b) => b.append_null(),
            Self::UInt32(b) => b.append_null(),
            Self::UInt64(b) | Self::Bit(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Decimal(b, _) => b.append_null(),
            Self::Text(b) => b.append_null(),
            Self::Binary(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
            Self::Time(b) => b.append_null(),
        }
    }

    /// Appends `value` as MariaDB's text protocol wrote it; the error says why it does not fit.
    fn append(&mut self, value: &[u8]) -> Result<(), String> {
        match self {
            Self::Int8(b) => b.append_value(number(value)?),
            Self::Int16(b) => b.append_value(number(value)?),
            Self::Int32(b) => b.append_value(number(value)?),
            Self::Int64(b) => b.append_value(number(value)?),
            Self::UInt8(b) => b.append_value(number(value)?),
            Self::UInt16(b) => b.append_value(number(value)?),
            Self::UInt32(b) => b.append_value(number(value)?),
            Self::UInt64(b) => b.append_value(number(value)?),
            // Selected as a DOUBLE holding the FLOAT's exact value (see the scan's statement).
            Self::Float32(b) => b.append_value(number::<f64>(value)? as f32),
            Self::Float64(b) => b.append_value(number(value)?),
            Self::Decimal(b, scale) => b.append_value(decimal(text(value)?, *scale)?),
            Self::Text(b) => b.append_value(text(value)?),
            Self::Binary(b) => b.append_value(value),
            Self::Date(b) => b.append_value(days(date(text(value)?)?)),
            Self::Timestamp(b) => b.append_value(timestamp(text(value)?)?),
            Self::Time(b) => b.append_value(time(text(value)?)?),
            Self::Bit(b) => b.append_value(bits(value)?),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Int8(b) => Arc::new(b.finish()),
            Self::Int16(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::UInt8(b) => Arc::new(b.finish()),
            Self::UInt16(b) => Arc::new(b.finish()),
            Self::UInt32(b) => Arc::new(b.finish()),
            Self::UInt64(b) | Self::Bit(b) => Arc::new(b.finish()),
            Self::Float32(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Decimal(b, _) => Arc::new(b.finish()),
            Self::Text(b) => Arc::new(b.finish()),
            Self::Binary(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
            Self::Time(b) => Arc::new(b.finish()),
        }
    }
}

/// Rows of one scan's columns, gathered into record batches.
pub struct RowDecoder {
    table: String,
    schema: SchemaRef,
    names: Vec<String>,
    builders: Vec<Builder>,
    capacity: usize,
    types: Vec<MariaType>,
    /// Rows pushed since the last batch (a scan may project no column at all).
    rows: usize,
}

impl RowDecoder {
    /// A decoder of rows whose values are `columns` (name and type), in `schema`'s order.
    pub fn new(table: String, schema: SchemaRef, columns: &[(String, MariaType)], capacity: usize) -> Self {
        Self {
            table,
            schema,
            names: columns.iter().map(|(name, _)| name.clone()).collect(),
            builders: columns.iter().map(|(_, t)| Builder::new(*t, capacity)).collect(),
            capacity,
            types: columns.iter().map(|(_, t)| *t).collect(),
            rows: 0,
        }
    }

    /// Appends one row: each value as the text protocol sent it, `None` for NULL.
    pub fn push<'v>(
        &mut self,
        values: impl ExactSizeIterator<Item = Option<&'v [u8]>>,
    ) -> Result<(), DecodeError> {
        if values.len() != self.builders.len() {
            return Err(DecodeError::Shape {
                table: self.table.clone(),
                got: values.len(),
                expected: self.builders.len(),
            });
        }
        for ((builder, name), value) in self.builders.iter_mut().zip(&self.names).zip(values) {
            let Some(value) = value else {
                builder.append_null();
                continue;
            };
            builder.append(value).map_err(|reason| DecodeError::Value {
                table: self.table.clone(),
                column: name.clone(),
                value: String::from_utf8_lossy(&value[..value.len().min(64)]).into_owned(),
                reason,
            })?;
        }
        self.rows += 1;
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The rows pushed since the last batch, if any.
    pub fn flush(&mut self) -> Result<Option<RecordBatch>, DecodeError> {
        if self.rows() == 0 {
            return Ok(None);
        }
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        self.rows = 0;
        // Finished builders keep no capacity: start the next batch with what this one needed.
        self.builders = self
            .types
            .iter()
            .map(|t| Builder::new(*t, self.capacity))
            .collect();
        Ok(Some(batch))
    }
}

fn text(value: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(value).map_err(|_| "not UTF-8 text".to_string())
}

fn number<T: std::str::FromStr>(value: &[u8]) -> Result<T, String> {
    text(value)?
        .parse()
        .map_err(|_| format!("not a {}", std::any::type_name::<T>()))
}

/// `-123.4500` as an integer of `scale` fractional digits.
fn decimal(value: &str, scale: u32) -> Result<i128, String> {
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || fraction.len() > scale as usize {
        return Err(format!("not a decimal of scale {scale}"));
    }
    // Digit by digit: no allocation per value, on the hot path of every scan.
    let padding = scale as usize - fraction.len();
    let magnitude = whole
        .bytes()
        .chain(fraction.bytes())
        .chain(std::iter::repeat_n(b'0', padding))
        .try_fold(0i128, |sum, digit| {
            sum.checked_mul(10)?.checked_add(i128::from(digit - b'0'))
        })
        .ok_or_else(|| "beyond 38 digits".to_string())?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// `YYYY-MM-DD`; a zero day or month is not a date.
fn date(value: &str) -> Result<NaiveDate, String> {
    let mut parts = value.splitn(3, '-').map(str::parse::<u32>);
    let (Some(Ok(year)), Some(Ok(month)), Some(Ok(day))) = (parts.next(), parts.next(), parts.next()) else {
        return Err("not a date".into());
    };
    if year == 0 || month == 0 || day == 0 {
        return Err(
            "a zero date has no Arrow value: store NULL instead, or read the column through a view that does"
                .into(),
        );
    }
    NaiveDate::from_ymd_opt(year as i32, month, day).ok_or_else(|| "not a date".into())
}

fn days(date: NaiveDate) -> i32 {
    chrono::Datelike::num_days_from_ce(&date) - UNIX_EPOCH_FROM_CE
}

/// `HH:MM:SS[.ffffff]` as microseconds, the hours unbounded (as `TIME` prints them).
fn clock(value: &str) -> Result<i64, String> {
    let (seconds, fraction) = value.split_once('.').unwrap_or((value, ""));
    let mut parts = seconds.splitn(3, ':').map(str::parse::<i64>);
    let (Some(Ok(hours)), Some(Ok(minutes)), Some(Ok(seconds))) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("not a time".into());
    };
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a time".into());
    }
    let micros = fraction
        .bytes()
        .chain(std::iter::repeat_n(b'0', 6 - fraction.len()))
        .fold(0i64, |sum, digit| sum * 10 + i64::from(digit - b'0'));
    Ok(((hours * 60 + minutes) * 60 + seconds) * MICROS_PER_SECOND + micros)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` as microseconds since the Unix epoch.
fn timestamp(value: &str) -> Result<i64, String> {
    let (day, time) = value.split_once(' ').ok_or("not a date and time")?;
    Ok(i64::from(days(date(day)?)) * MICROS_PER_DAY + clock(time)?)
}

/// `[-]HHH:MM:SS[.ffffff]` as signed microseconds.
fn time(value: &str) -> Result<i64, String> {
    match value.strip_prefix('-') {
        Some(magnitude) => clock(magnitude).map(|micros| -micros),
        None => clock(value),
    }
}

/// A `BIT(n)` value: up to 8 big-endian bytes.
fn bits(value: &[u8]) -> Result<u64, String> {
    if value.len() > 8 {
        return Err("more than 64 bits".into());
    }
    Ok(value.iter().fold(0, |acc, byte| (acc << 8) | u64::from(*byte)))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::display::array_value_to_string;

    use super::*;

    fn decode(maria_type: MariaType, values: &[Option<&str>]) -> Result<Vec<String>, DecodeError> {
        let schema = Arc::new(Schema::new(vec![Field::new("v", maria_type.arrow_type(), true)]));
        let mut decoder = RowDecoder::new("db.t".into(), schema, &[("v".into(), maria_type)], 4);
        for value in values {
            decoder.push(std::iter::once(value.map(str::as_bytes)))?;
        }
        let batch = decoder.flush()?.expect("rows");
        Ok((0..batch.num_rows())
            .map(|i| array_value_to_string(batch.column(0), i).unwrap())
            .collect())
    }

    #[test]
    fn numbers_at_their_limits() {
        assert_eq!(
            decode(MariaType::UInt64, &[Some("18446744073709551615"), None]).unwrap(),
            ["18446744073709551615", ""]
        );
        assert_eq!(
            decode(
                MariaType::Decimal {
                    precision: 12,
                    scale: 2
                },
                &[Some("-1234567890.05"), Some("0.10"), Some("7"), Some("-0.5")]
            )
            .unwrap(),
            ["-1234567890.05", "0.10", "7.00", "-0.50"]
        );
        let widest = "9".repeat(38);
        let decimal38 = MariaType::Decimal {
            precision: 38,
            scale: 0,
        };
        assert_eq!(
            decode(decimal38, &[Some(&widest)]).unwrap(),
            std::slice::from_ref(&widest)
        );
        assert!(decode(decimal38, &[Some(&format!("{widest}99"))]).is_err());
        let error = decode(MariaType::Int8, &[Some("300")]).unwrap_err().to_string();
        assert!(
            error.contains("db.t") && error.contains("column v") && error.contains("300"),
            "{error}"
        );
    }

    #[test]
    fn temporal_values_and_their_zeroes() {
        assert_eq!(
            decode(MariaType::Date, &[Some("1000-01-01"), Some("9999-12-31")]).unwrap(),
            ["1000-01-01", "9999-12-31"]
        );
        assert_eq!(
            decode(
                MariaType::DateTime,
                &[Some("2024-02-29 23:59:59.123456"), Some("1970-01-01 00:00:00")]
            )
            .unwrap(),
            ["2024-02-29T23:59:59.123456", "1970-01-01T00:00:00"]
        );
        assert_eq!(
            decode(MariaType::Timestamp, &[Some("2038-01-19 03:14:07.5")]).unwrap(),
            ["2038-01-19T03:14:07.500Z"]
        );
        let times = decode(MariaType::Time, &[Some("-838:59:59"), Some("00:00:01.000001")]).unwrap();
        assert_eq!(times, ["-PT3020399S", "PT1.000001S"]);
        for zero in ["0000-00-00", "2024-00-10", "2024-05-00"] {
            let error = decode(MariaType::Date, &[Some(zero)]).unwrap_err().to_string();
            assert!(
                error.contains("zero date") && error.contains("column v"),
                "{error}"
            );
        }
        let error = decode(MariaType::DateTime, &[Some("0000-00-00 00:00:00")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("zero date"), "{error}");
    }

    #[test]
    fn bits_text_and_bad_shapes() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "b",
            MariaType::Bit.arrow_type(),
            true,
        )]));
        let mut decoder = RowDecoder::new("db.t".into(), schema, &[("b".into(), MariaType::Bit)], 4);
        decoder.push(std::iter::once(Some(&[0x01u8, 0x00][..]))).unwrap();
        let batch = decoder.flush().unwrap().unwrap();
        assert_eq!(array_value_to_string(batch.column(0), 0).unwrap(), "256");
        assert!(decoder.push([None, None].into_iter()).is_err());
        let mut no_columns = RowDecoder::new("db.t".into(), Arc::new(Schema::empty()), &[], 4);
        no_columns.push(std::iter::empty()).unwrap();
        no_columns.push(std::iter::empty()).unwrap();
        assert_eq!(no_columns.flush().unwrap().unwrap().num_rows(), 2);
        assert_eq!(decode(MariaType::Text, &[Some("😀 é")]).unwrap(), ["😀 é"]);
    }
}
