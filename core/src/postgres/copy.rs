//! Decoder of `COPY … TO STDOUT (FORMAT binary)` streams straight into Arrow arrays.
//!
//! The stream arrives in arbitrary chunks; complete tuples are decoded in place and only a
//! trailing partial tuple is buffered. Batches are cut by row count and by decoded bytes, so
//! memory stays bounded whatever the partition size. Corrupt or truncated input is an error,
//! never a panic, and no allocation is sized from a length read off the wire.

use std::sync::Arc;

use datafusion::arrow::array::NullBufferBuilder;
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, IntervalMonthDayNanoBuilder, ListArray,
    StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{Field, IntervalMonthDayNano, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use thiserror::Error;

use super::types::PgType;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Days and microseconds between the Unix epoch and the Postgres epoch (2000-01-01).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CopyError {
    #[error("COPY stream of {table} is corrupt: {reason}")]
    Corrupt { table: String, reason: String },
    #[error("COPY stream of {table} ended before its trailer: the source closed the connection mid-scan")]
    Truncated { table: String },
    #[error("column {column:?} of {table}: {reason}")]
    Value {
        table: String,
        column: String,
        reason: String,
    },
}

/// Why one field could not be decoded; [`CopyDecoder`] adds the table and column.
#[derive(Debug, PartialEq, Eq)]
enum FieldError {
    Corrupt(String),
    Unrepresentable(String),
}

type FieldResult = Result<(), FieldError>;

fn corrupt(reason: impl Into<String>) -> FieldError {
    FieldError::Corrupt(reason.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Tuples,
    Done,
    /// An error was returned; builders may hold part of a tuple, so nothing more is decoded.
    Failed,
}

/// Limits on one output batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub rows: usize,
    pub bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            rows: 8192,
            bytes: 32 * 1024 * 1024,
        }
    }
}

/// Decodes one binary COPY stream into record batches of `schema`.
pub struct CopyDecoder {
    table: String,
    schema: SchemaRef,
    columns: Vec<ColumnDecoder>,
    state: State,
    pending: Vec<u8>,
    /// Field spans of the tuple being decoded, reused across tuples.
    fields: Vec<Option<(usize, usize)>>,
    rows: usize,
    bytes: usize,
    limits: BatchLimits,
}

impl CopyDecoder {
    /// `types[i]` is how column `i` of `schema` arrives on the wire.
    pub fn new(table: impl Into<String>, schema: SchemaRef, types: &[PgType], limits: BatchLimits) -> Self {
        debug_assert_eq!(schema.fields().len(), types.len());
        let columns = types.iter().map(|t| ColumnDecoder::new(t, limits.rows)).collect();
        Self {
            table: table.into(),
            fields: Vec::with_capacity(types.len()),
            schema,
            columns,
            state: State::Header,
            pending: Vec::new(),
            rows: 0,
            bytes: 0,
            limits,
        }
    }

    /// Decodes every complete tuple in `chunk` (after any buffered partial tuple).
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), CopyError> {
        let result = self.push_inner(chunk);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn push_inner(&mut self, chunk: &[u8]) -> Result<(), CopyError> {
        self.ensure_usable()?;
        if self.pending.is_empty() {
            let consumed = self.decode(chunk)?;
            self.pending.extend_from_slice(&chunk[consumed..]);
            return Ok(());
        }
        self.pending.extend_from_slice(chunk);
        let mut pending = std::mem::take(&mut self.pending);
        let consumed = self.decode(&pending)?;
        pending.drain(..consumed);
        self.pending = pending;
        Ok(())
    }

    fn ensure_usable(&self) -> Result<(), CopyError> {
        if self.state == State::Failed {
            return Err(self.corrupt("decoder already failed"));
        }
        Ok(())
    }

    /// True once the current batch has reached its row or byte limit.
    pub fn batch_full(&self) -> bool {
        self.rows >= self.limits.rows || self.bytes >= self.limits.bytes
    }

    /// True once the trailer has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the rows decoded so far as a batch, if there are any.
    pub fn flush(&mut self) -> Result<Option<RecordBatch>, CopyError> {
        self.ensure_usable()?;
        if self.rows == 0 {
            return Ok(None);
        }
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnDecoder::finish).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .map_err(|e| self.corrupt(format!("decoded columns do not form a batch: {e}")))?;
        self.rows = 0;
        self.bytes = 0;
        Ok(Some(batch))
    }

    /// Ends the stream: fails unless the trailer was seen and nothing follows it.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, CopyError> {
        self.ensure_usable()?;
        if self.state != State::Done {
            return Err(CopyError::Truncated {
                table: self.table.clone(),
            });
        }
        if !self.pending.is_empty() {
            return Err(self.corrupt(format!("{} bytes after the trailer", self.pending.len())));
        }
        self.flush()
    }

    fn corrupt(&self, reason: impl Into<String>) -> CopyError {
        CopyError::Corrupt {
            table: self.table.clone(),
            reason: reason.into(),
        }
    }

    /// Decodes complete units from `buf`; returns how many bytes were consumed.
    fn decode(&mut self, buf: &[u8]) -> Result<usize, CopyError> {
        let mut pos = 0;
        if self.state == State::Header {
            match self.header_len(buf)? {
                Some(len) => {
                    pos = len;
                    self.state = State::Tuples;
                }
                None => return Ok(0),
            }
        }
        while self.state == State::Tuples {
            match self.decode_tuple(&buf[pos..])? {
                Some(len) => pos += len,
                None => break,
            }
        }
        if self.state == State::Done && pos < buf.len() {
            return Err(self.corrupt(format!("{} bytes after the trailer", buf.len() - pos)));
        }
        Ok(pos)
    }

    fn header_len(&self, buf: &[u8]) -> Result<Option<usize>, CopyError> {
        if buf.len() < SIGNATURE.len() + 8 {
            if !SIGNATURE.starts_with(&buf[..buf.len().min(SIGNATURE.len())]) {
                return Err(self.corrupt("missing PGCOPY signature"));
            }
            return Ok(None);
        }
        if &buf[..SIGNATURE.len()] != SIGNATURE {
            return Err(self.corrupt("missing PGCOPY signature"));
        }
        let flags = read_i32(&buf[11..15]);
        if flags & (1 << 16) != 0 {
            return Err(self.corrupt("stream includes OIDs, which Kalla does not request"));
        }
        let extension = read_i32(&buf[15..19]);
        let Ok(extension) = usize::try_from(extension) else {
            return Err(self.corrupt("negative header extension length"));
        };
        let total = 19 + extension;
        Ok((buf.len() >= total).then_some(total))
    }

    /// Decodes one tuple at the start of `buf`, or returns `None` if it is incomplete.
    fn decode_tuple(&mut self, buf: &[u8]) -> Result<Option<usize>, CopyError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let count = i16::from_be_bytes([buf[0], buf[1]]);
        if count == -1 {
            self.state = State::Done;
            return Ok(Some(2));
        }
        if count as usize != self.columns.len() || count < 0 {
            return Err(self.corrupt(format!(
                "tuple has {count} fields, expected {}",
                self.columns.len()
            )));
        }
        self.fields.clear();
        let mut pos = 2;
        for _ in 0..count {
            if buf.len() < pos + 4 {
                return Ok(None);
            }
            let len = read_i32(&buf[pos..pos + 4]);
            pos += 4;
            if len == -1 {
                self.fields.push(None);
                continue;
            }
            let Ok(len) = usize::try_from(len) else {
                return Err(self.corrupt(format!("negative field length {len}")));
            };
            if buf.len() < pos + len {
                return Ok(None);
            }
            self.fields.push(Some((pos, len)));
            pos += len;
        }
        for (index, field) in self.fields.iter().enumerate() {
            let column = &mut self.columns[index];
            let result = match *field {
                None => {
                    column.append_null();
                    Ok(())
                }
                Some((start, len)) => column.append(&buf[start..start + len]),
            };
            if let Err(error) = result {
                return Err(self.field_error(index, error));
            }
        }
        self.rows += 1;
        self.bytes += pos;
        Ok(Some(pos))
    }

    fn field_error(&self, index: usize, error: FieldError) -> CopyError {
        let column = self.schema.field(index).name().clone();
        let reason = match error {
            FieldError::Corrupt(reason) => format!("corrupt value: {reason}"),
            FieldError::Unrepresentable(reason) => reason,
        };
        CopyError::Value {
            table: self.table.clone(),
            column,
            reason,
        }
    }
}

fn read_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn fixed<const N: usize>(bytes: &[u8], type_name: &str) -> Result<[u8; N], FieldError> {
    bytes.try_into().map_err(|_| {
        corrupt(format!(
            "{type_name} value of {} bytes, expected {N}",
            bytes.len()
        ))
    })
}

/// Appends values of one column to its Arrow builder.
enum ColumnDecoder {
    Bool(BooleanBuilder),
    Int2(Int16Builder),
    Int4(Int32Builder),
    Int8(Int64Builder),
    Float4(Float32Builder),
    Float8(Float64Builder),
    Numeric {
        builder: Decimal128Builder,
        precision: u8,
        scale: i8,
    },
    Text(StringBuilder),
    Jsonb(StringBuilder),
    Uuid(StringBuilder),
    Bytea(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    TimestampTz(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
    Interval(IntervalMonthDayNanoBuilder),
    List(Box<ListDecoder>),
}

struct ListDecoder {
    field: Arc<Field>,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
    elements: ColumnDecoder,
    /// Elements appended to `elements` in the current batch.
    element_count: usize,
}

impl ColumnDecoder {
    fn new(pg_type: &PgType, capacity: usize) -> Self {
        match pg_type {
            PgType::Bool => Self::Bool(BooleanBuilder::with_capacity(capacity)),
            PgType::Int2 => Self::Int2(Int16Builder::with_capacity(capacity)),
            PgType::Int4 => Self::Int4(Int32Builder::with_capacity(capacity)),
            PgType::Int8 => Self::Int8(Int64Builder::with_capacity(capacity)),
            PgType::Float4 => Self::Float4(Float32Builder::with_capacity(capacity)),
            PgType::Float8 => Self::Float8(Float64Builder::with_capacity(capacity)),
            PgType::Numeric { precision, scale } => Self::Numeric {
                builder: Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(*precision, *scale)
                    .expect("precision and scale validated by PgType"),
                precision: *precision,
                scale: *scale,
            },
            PgType::Text | PgType::TextCast => {
                Self::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            PgType::Jsonb => Self::Jsonb(StringBuilder::with_capacity(capacity, capacity * 16)),
            PgType::Uuid => Self::Uuid(StringBuilder::with_capacity(capacity, capacity * 36)),
            PgType::Bytea => Self::Bytea(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            PgType::Date => Self::Date(Date32Builder::with_capacity(capacity)),
            PgType::Timestamp => Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity)),
            PgType::TimestampTz => {
                Self::TimestampTz(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"))
            }
            PgType::Time => Self::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            PgType::Interval => Self::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity)),
            PgType::Array(element) => Self::List(Box::new(ListDecoder {
                field: Arc::new(Field::new("item", element.arrow_type(), true)),
                offsets: {
                    let mut offsets = Vec::with_capacity(capacity + 1);
                    offsets.push(0);
                    offsets
                },
                nulls: NullBufferBuilder::new(capacity),
                elements: ColumnDecoder::new(element, capacity),
                element_count: 0,
            })),
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::Int2(b) => b.append_null(),
            Self::Int4(b) => b.append_null(),
            Self::Int8(b) => b.append_null(),
            Self::Float4(b) => b.append_null(),
            Self::Float8(b) => b.append_null(),
            Self::Numeric { builder, .. } => builder.append_null(),
            Self::Text(b) | Self::Jsonb(b) | Self::Uuid(b) => b.append_null(),
            Self::Bytea(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Timestamp(b) | Self::TimestampTz(b) => b.append_null(),
            Self::Time(b) => b.append_null(),
            Self::Interval(b) => b.append_null(),
            Self::List(list) => {
                let last = *list.offsets.last().expect("offsets start with 0");
                list.offsets.push(last);
                list.nulls.append_null();
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) -> FieldResult {
        match self {
            Self::Bool(b) => match bytes {
                [0] => b.append_value(false),
                [1] => b.append_value(true),
                _ => return Err(corrupt("bool value is not a single 0 or 1 byte")),
            },
            Self::Int2(b) => b.append_value(i16::from_be_bytes(fixed(bytes, "int2")?)),
            Self::Int4(b) => b.append_value(i32::from_be_bytes(fixed(bytes, "int4")?)),
            Self::Int8(b) => b.append_value(i64::from_be_bytes(fixed(bytes, "int8")?)),
            Self::Float4(b) => b.append_value(f32::from_be_bytes(fixed(bytes, "float4")?)),
            Self::Float8(b) => b.append_value(f64::from_be_bytes(fixed(bytes, "float8")?)),
            Self::Numeric {
                builder,
                precision,
                scale,
            } => builder.append_value(decode_numeric(bytes, *precision, *scale)?),
            Self::Text(b) => b.append_value(utf8(bytes)?),
            Self::Jsonb(b) => match bytes.split_first() {
                Some((1, json)) => b.append_value(utf8(json)?),
                _ => return Err(corrupt("jsonb value without version byte 1")),
            },
            Self::Uuid(b) => b.append_value(format_uuid(&fixed(bytes, "uuid")?, &mut [0; 36])),
            Self::Bytea(b) => b.append_value(bytes),
            Self::Date(b) => b.append_value(decode_date(bytes)?),
            Self::Timestamp(b) | Self::TimestampTz(b) => b.append_value(decode_timestamp(bytes)?),
            Self::Time(b) => b.append_value(i64::from_be_bytes(fixed(bytes, "time")?)),
            Self::Interval(b) => b.append_value(decode_interval(bytes)?),
            Self::List(list) => list.append(bytes)?,
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int2(b) => Arc::new(b.finish()),
            Self::Int4(b) => Arc::new(b.finish()),
            Self::Int8(b) => Arc::new(b.finish()),
            Self::Float4(b) => Arc::new(b.finish()),
            Self::Float8(b) => Arc::new(b.finish()),
            Self::Numeric { builder, .. } => Arc::new(builder.finish()),
            Self::Text(b) | Self::Jsonb(b) | Self::Uuid(b) => Arc::new(b.finish()),
            Self::Bytea(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Timestamp(b) | Self::TimestampTz(b) => Arc::new(b.finish()),
            Self::Time(b) => Arc::new(b.finish()),
            Self::Interval(b) => Arc::new(b.finish()),
            Self::List(list) => list.finish(),
        }
    }
}

impl ListDecoder {
    /// A binary array: ndim, has-nulls flag, element oid, (length, lower bound) per
    /// dimension, then length-prefixed elements.
    fn append(&mut self, bytes: &[u8]) -> FieldResult {
        if bytes.len() < 12 {
            return Err(corrupt("array header shorter than 12 bytes"));
        }
        let ndim = read_i32(&bytes[0..4]);
        let elements = match ndim {
            0 => 0,
            1 => {
                if bytes.len() < 20 {
                    return Err(corrupt("array dimension header is truncated"));
                }
                usize::try_from(read_i32(&bytes[12..16])).map_err(|_| corrupt("negative array length"))?
            }
            n if n > 1 => {
                return Err(FieldError::Unrepresentable(format!(
                    "{n}-dimensional array: only one-dimensional arrays can be read (unnest it in a view)"
                )));
            }
            _ => return Err(corrupt("negative array dimension count")),
        };
        let mut pos = if ndim == 0 { 12 } else { 20 };
        for _ in 0..elements {
            self.append_element(bytes, &mut pos)?;
        }
        if pos != bytes.len() {
            return Err(corrupt("array has bytes beyond its declared elements"));
        }
        let end =
            i32::try_from(self.element_count).map_err(|_| corrupt("array batch exceeds 2^31 elements"))?;
        self.offsets.push(end);
        self.nulls.append_non_null();
        Ok(())
    }

    fn append_element(&mut self, bytes: &[u8], pos: &mut usize) -> FieldResult {
        let Some(len_bytes) = bytes.get(*pos..*pos + 4) else {
            return Err(corrupt("array element length is truncated"));
        };
        let len = read_i32(len_bytes);
        *pos += 4;
        if len == -1 {
            self.elements.append_null();
            self.element_count += 1;
            return Ok(());
        }
        let len = usize::try_from(len).map_err(|_| corrupt("negative array element length"))?;
        let Some(value) = bytes.get(*pos..*pos + len) else {
            return Err(corrupt("array element is truncated"));
        };
        *pos += len;
        self.elements.append(value)?;
        self.element_count += 1;
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        self.element_count = 0;
        let values = self.elements.finish();
        let nulls = self.nulls.finish();
        Arc::new(ListArray::new(
            self.field.clone(),
            OffsetBuffer::new(offsets.into()),
            values,
            nulls,
        ))
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, FieldError> {
    std::str::from_utf8(bytes).map_err(|e| corrupt(format!("invalid UTF-8: {e}")))
}

fn format_uuid<'a>(bytes: &[u8; 16], buf: &'a mut [u8; 36]) -> &'a str {
    uuid::Uuid::from_bytes(*bytes).hyphenated().encode_lower(buf)
}

fn decode_date(bytes: &[u8]) -> Result<i32, FieldError> {
    let days = i32::from_be_bytes(fixed(bytes, "date")?);
    if days == i32::MAX || days == i32::MIN {
        return Err(FieldError::Unrepresentable(
            "date '±infinity' has no Arrow Date32 value (filter it out or cast it in a view)".into(),
        ));
    }
    days.checked_add(PG_EPOCH_DAYS).ok_or_else(|| {
        FieldError::Unrepresentable(format!("date {days} days from 2000-01-01 is out of range"))
    })
}

fn decode_timestamp(bytes: &[u8]) -> Result<i64, FieldError> {
    let micros = i64::from_be_bytes(fixed(bytes, "timestamp")?);
    if micros == i64::MAX || micros == i64::MIN {
        return Err(FieldError::Unrepresentable(
            "timestamp '±infinity' has no Arrow Timestamp value (filter it out or cast it in a view)".into(),
        ));
    }
    micros.checked_add(PG_EPOCH_MICROS).ok_or_else(|| {
        FieldError::Unrepresentable(format!("timestamp {micros}µs from 2000-01-01 is out of range"))
    })
}

fn decode_interval(bytes: &[u8]) -> Result<IntervalMonthDayNano, FieldError> {
    let bytes: [u8; 16] = fixed(bytes, "interval")?;
    let micros = i64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes"));
    let days = i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let months = i32::from_be_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let nanos = micros.checked_mul(1000).ok_or_else(|| {
        FieldError::Unrepresentable(format!("interval time part of {micros}µs overflows nanoseconds"))
    })?;
    Ok(IntervalMonthDayNano::new(months, days, nanos))
}

const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// A binary `numeric` as the unscaled integer of a Decimal128 with `scale`; an error when the
/// value does not fit `precision` or has more fractional digits than `scale`.
fn decode_numeric(bytes: &[u8], precision: u8, scale: i8) -> Result<i128, FieldError> {
    if bytes.len() < 8 {
        return Err(corrupt("numeric header shorter than 8 bytes"));
    }
    let ndigits = i16::from_be_bytes([bytes[0], bytes[1]]);
    let weight = i16::from_be_bytes([bytes[2], bytes[3]]) as i32;
    let sign = u16::from_be_bytes([bytes[4], bytes[5]]);
    let Ok(ndigits) = usize::try_from(ndigits) else {
        return Err(corrupt("negative numeric digit count"));
    };
    if bytes.len() != 8 + 2 * ndigits {
        return Err(corrupt(format!(
            "numeric with {ndigits} digits has {} bytes",
            bytes.len()
        )));
    }
    let negative = match sign {
        0x0000 => false,
        0x4000 => true,
        0xC000 => {
            return Err(FieldError::Unrepresentable(
                "numeric NaN has no Decimal128 value".into(),
            ));
        }
        0xD000 | 0xF000 => {
            return Err(FieldError::Unrepresentable(
                "numeric ±Infinity has no Decimal128 value".into(),
            ));
        }
        other => return Err(corrupt(format!("numeric sign word {other:#06x}"))),
    };
    let digits = bytes[8..]
        .chunks_exact(2)
        .map(|d| u16::from_be_bytes([d[0], d[1]]));
    let mut unscaled: i128 = 0;
    for digit in digits {
        if digit >= 10_000 {
            return Err(corrupt(format!("numeric digit {digit} is not base 10000")));
        }
        unscaled = unscaled
            .checked_mul(10_000)
            .and_then(|v| v.checked_add(digit as i128))
            .ok_or_else(|| numeric_overflow(precision, scale))?;
    }
    // The digits read so far are `value * 10^exponent`.
    let exponent = 4 * (ndigits as i32 - 1 - weight);
    let shift = scale as i32 - exponent;
    if unscaled != 0 {
        unscaled = if shift >= 0 {
            POW10
                .get(shift as usize)
                .and_then(|p| unscaled.checked_mul(*p))
                .ok_or_else(|| numeric_overflow(precision, scale))?
        } else {
            let divisor = POW10.get((-shift) as usize).copied().unwrap_or(0);
            if divisor == 0 || unscaled % divisor != 0 {
                return Err(FieldError::Unrepresentable(format!(
                    "numeric value has more than {scale} fractional digits; Decimal128({precision},{scale}) would round it"
                )));
            }
            unscaled / divisor
        };
    }
    if unscaled >= POW10[precision as usize] {
        return Err(numeric_overflow(precision, scale));
    }
    Ok(if negative { -unscaled } else { unscaled })
}

fn numeric_overflow(precision: u8, scale: i8) -> FieldError {
    FieldError::Unrepresentable(format!(
        "numeric value does not fit Decimal128({precision},{scale}); cast the column to a wider numeric(p,s) in a view"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Date32Type, Decimal128Type, Int32Type, Int64Type, Schema};

    /// Builds a binary COPY stream from rows of optional raw field values.
    pub(super) fn stream(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for field in row {
                match field {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(bytes) => {
                        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                        out.extend_from_slice(bytes);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn numeric(ndigits: &[u16], weight: i16, sign: u16, dscale: i16) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(ndigits.len() as i16).to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for d in ndigits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    fn decoder(types: &[PgType], rows: usize) -> CopyDecoder {
        let fields: Vec<Field> = types
            .iter()
            .enumerate()
            .map(|(i, t)| Field::new(format!("c{i}"), t.arrow_type(), true))
            .collect();
        CopyDecoder::new(
            "public.t",
            Arc::new(Schema::new(fields)),
            types,
            BatchLimits {
                rows,
                bytes: usize::MAX,
            },
        )
    }

    pub(super) fn decode_all(
        types: &[PgType],
        bytes: &[u8],
        chunk: usize,
    ) -> Result<Vec<RecordBatch>, CopyError> {
        let mut decoder = decoder(types, 2);
        let mut batches = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            decoder.push(piece)?;
            if decoder.batch_full() {
                batches.extend(decoder.flush()?);
            }
        }
        batches.extend(decoder.finish()?);
        Ok(batches)
    }

    pub(super) fn sample() -> (Vec<PgType>, Vec<u8>) {
        let types = vec![
            PgType::Int4,
            PgType::Text,
            PgType::Numeric {
                precision: 15,
                scale: 2,
            },
            PgType::Date,
        ];
        let rows: Vec<Vec<Option<Vec<u8>>>> = (0..5i32)
            .map(|i| {
                vec![
                    Some(i.to_be_bytes().to_vec()),
                    (i % 2 == 0).then(|| format!("row {i} ✓").into_bytes()),
                    Some(numeric(&[12, 3456, 7000], 1, 0x4000, 2)),
                    Some((i - 1).to_be_bytes().to_vec()),
                ]
            })
            .collect();
        (types, stream(&rows))
    }

    #[test]
    fn decodes_in_any_chunking_with_bounded_batches() {
        let (types, bytes) = sample();
        for chunk in [1, 2, 3, 7, 19, bytes.len()] {
            let batches = decode_all(&types, &bytes, chunk).unwrap();
            // A push decodes its whole chunk; chunks smaller than a tuple keep batches at the row limit.
            if chunk < 20 {
                assert!(
                    batches.iter().all(|b| b.num_rows() <= 2),
                    "batch bound with chunk {chunk}"
                );
            }
            assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 5);
            let first = &batches[0];
            assert_eq!(first.column(0).as_primitive::<Int32Type>().value(1), 1);
            assert_eq!(first.column(1).as_string::<i32>().value(0), "row 0 ✓");
            assert!(first.column(1).is_null(1));
            assert_eq!(
                first.column(2).as_primitive::<Decimal128Type>().value(0),
                -12345670
            );
            assert_eq!(
                first.column(3).as_primitive::<Date32Type>().value(0),
                PG_EPOCH_DAYS - 1
            );
        }
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let (types, bytes) = sample();
        for cut in 0..bytes.len() {
            let result = decode_all(&types, &bytes[..cut], 5);
            assert!(result.is_err(), "truncated at {cut} of {} must fail", bytes.len());
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let (types, bytes) = sample();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..5_000 {
            let mut corrupted = bytes.clone();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % corrupted.len() as u64) as usize;
                corrupted[at] = (state >> 32) as u8;
            }
            let _ = decode_all(&types, &corrupted, 11);
        }
    }

    #[test]
    fn huge_declared_lengths_do_not_allocate() {
        let types = vec![PgType::Bytea];
        let mut bytes = stream(&[]);
        bytes.truncate(bytes.len() - 2);
        bytes.extend_from_slice(&1i16.to_be_bytes());
        bytes.extend_from_slice(&i32::MAX.to_be_bytes());
        let mut decoder = decoder(&types, 10);
        decoder.push(&bytes).unwrap();
        assert!(decoder.pending.capacity() < 1024);
        assert!(matches!(decoder.finish(), Err(CopyError::Truncated { .. })));
    }

    #[test]
    fn wrong_field_count_and_trailing_garbage_are_corrupt() {
        let mut bytes = stream(&[vec![Some(1i64.to_be_bytes().to_vec())]]);
        assert!(decode_all(&[PgType::Int8, PgType::Int8], &bytes, 64).is_err());
        bytes.push(0);
        assert!(decode_all(&[PgType::Int8], &bytes, 64).is_err());
        let batches = decode_all(&[PgType::Int8], &bytes[..bytes.len() - 1], 64).unwrap();
        assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 1);
    }

    #[test]
    fn numeric_decoding_is_exact_or_an_error() {
        let decode = |bytes: &[u8], p, s| decode_numeric(bytes, p, s);
        assert_eq!(decode(&numeric(&[], 0, 0, 0), 10, 2), Ok(0));
        assert_eq!(decode(&numeric(&[1, 5000], 0, 0, 1), 10, 2), Ok(150));
        assert_eq!(decode(&numeric(&[1], 2, 0, 0), 12, 0), Ok(100_000_000));
        assert_eq!(decode(&numeric(&[5], -1, 0x4000, 4), 10, 4), Ok(-5));
        assert!(
            matches!(decode(&numeric(&[1, 2345], 0, 0, 4), 10, 2), Err(FieldError::Unrepresentable(m)) if m.contains("fractional"))
        );
        assert!(
            matches!(decode(&numeric(&[1], 3, 0, 0), 5, 0), Err(FieldError::Unrepresentable(m)) if m.contains("does not fit"))
        );
        assert!(decode(&numeric(&[], 0, 0xC000, 0), 38, 10).is_err());
        assert!(decode(&numeric(&[], 0, 0xD000, 0), 38, 10).is_err());
        assert!(matches!(
            decode(&numeric(&[10000], 0, 0, 0), 38, 0),
            Err(FieldError::Corrupt(_))
        ));
        let max_digits = numeric(&[9999; 10], 9, 0, 0);
        assert!(decode(&max_digits, 38, 10).is_err());
        assert_eq!(
            decode(
                &numeric(
                    &[99, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999],
                    9,
                    0,
                    0
                ),
                38,
                0
            ),
            Ok(10i128.pow(38) - 1)
        );
    }

    #[test]
    fn value_errors_name_table_and_column() {
        let bytes = stream(&[vec![Some(i32::MAX.to_be_bytes().to_vec())]]);
        let error = decode_all(&[PgType::Date], &bytes, 64).unwrap_err();
        assert_eq!(
            error,
            CopyError::Value {
                table: "public.t".into(),
                column: "c0".into(),
                reason: "date '±infinity' has no Arrow Date32 value (filter it out or cast it in a view)"
                    .into()
            }
        );
        let bytes = stream(&[vec![Some(vec![0xff, 0xfe])]]);
        assert!(
            decode_all(&[PgType::Text], &bytes, 64)
                .unwrap_err()
                .to_string()
                .contains("invalid UTF-8")
        );
    }

    #[test]
    fn arrays_with_nulls_and_empty_arrays() {
        let element = |v: i32| {
            let mut e = 4i32.to_be_bytes().to_vec();
            e.extend_from_slice(&v.to_be_bytes());
            e
        };
        let mut one_dim = Vec::new();
        for word in [1i32, 1, 23, 3, 1] {
            one_dim.extend_from_slice(&word.to_be_bytes());
        }
        one_dim.extend(element(7));
        one_dim.extend_from_slice(&(-1i32).to_be_bytes());
        one_dim.extend(element(-9));
        let mut empty = Vec::new();
        for word in [0i32, 0, 23] {
            empty.extend_from_slice(&word.to_be_bytes());
        }
        let bytes = stream(&[vec![Some(one_dim)], vec![None], vec![Some(empty)]]);
        let types = [PgType::Array(Box::new(PgType::Int4))];
        let mut decoder = decoder(&types, 10);
        decoder.push(&bytes).unwrap();
        let batch = decoder.finish().unwrap().unwrap();
        let list = batch.column(0).as_list::<i32>();
        assert_eq!(
            list.value(0)
                .as_primitive::<Int32Type>()
                .iter()
                .collect::<Vec<_>>(),
            vec![Some(7), None, Some(-9)]
        );
        assert!(list.is_null(1));
        assert_eq!(list.value(2).len(), 0);

        let mut two_dim = Vec::new();
        for word in [2i32, 0, 23, 1, 1, 1, 1] {
            two_dim.extend_from_slice(&word.to_be_bytes());
        }
        two_dim.extend(element(1));
        let error = decode_all(&types, &stream(&[vec![Some(two_dim)]]), 64).unwrap_err();
        assert!(
            error.to_string().contains("only one-dimensional arrays"),
            "{error}"
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::tests::{decode_all, sample, stream};
    use super::*;

    /// Every wire type the decoder knows.
    fn every_type() -> Vec<PgType> {
        vec![
            PgType::Bool,
            PgType::Int2,
            PgType::Int4,
            PgType::Int8,
            PgType::Float4,
            PgType::Float8,
            PgType::Numeric {
                precision: 12,
                scale: 2,
            },
            PgType::Numeric {
                precision: 38,
                scale: 10,
            },
            PgType::Text,
            PgType::Jsonb,
            PgType::Uuid,
            PgType::Bytea,
            PgType::Date,
            PgType::Timestamp,
            PgType::TimestampTz,
            PgType::Time,
            PgType::Interval,
            PgType::array_of(PgType::Int4),
            PgType::array_of(PgType::Text),
            PgType::array_of(PgType::Numeric {
                precision: 12,
                scale: 2,
            }),
            PgType::TextCast,
        ]
    }

    /// A field of up to 40 arbitrary bytes, or NULL.
    fn field() -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::weighted(0.9, prop::collection::vec(any::<u8>(), 0..40))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Well-framed tuples whose values are arbitrary bytes: each value decodes or is an error.
        #[test]
        fn arbitrary_values_in_every_type_decode_or_fail(
            rows in prop::collection::vec(prop::collection::vec(field(), every_type().len()), 1..4),
            chunk in 1usize..64,
        ) {
            let types = every_type();
            if let Ok(batches) = decode_all(&types, &stream(&rows), chunk) {
                prop_assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), rows.len());
            }
        }

        #[test]
        fn arbitrary_bytes_after_the_header_decode_or_fail(
            tail in prop::collection::vec(any::<u8>(), 0..512),
            chunk in 1usize..64,
        ) {
            let mut bytes = stream(&[]);
            bytes.truncate(bytes.len() - 2);
            bytes.extend_from_slice(&tail);
            let _ = decode_all(&every_type(), &bytes, chunk);
        }

        #[test]
        fn mutated_streams_decode_or_fail(
            mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            chunk in 1usize..64,
        ) {
            let (types, mut bytes) = sample();
            for (at, value) in mutations {
                let at = at.index(bytes.len());
                bytes[at] = value;
            }
            let cut = cut.index(bytes.len() + 1);
            let _ = decode_all(&types, &bytes[..cut], chunk);
        }

        #[test]
        fn chunking_never_changes_the_result(chunk in 1usize..200) {
            let (types, bytes) = sample();
            let whole = decode_all(&types, &bytes, bytes.len()).unwrap();
            let chunked = decode_all(&types, &bytes, chunk).unwrap();
            let rows = |batches: &[RecordBatch]| -> Vec<String> {
                batches
                    .iter()
                    .flat_map(|b| (0..b.num_rows()).map(move |r| format!("{:?}", b.slice(r, 1).columns())))
                    .collect()
            };
            prop_assert_eq!(rows(&whole), rows(&chunked));
        }
    }
}
