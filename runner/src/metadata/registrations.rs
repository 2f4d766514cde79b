//! The `sources` and `connections` tables as one kind of record: a name users give, the engine
//! that reads it, where its data is (stored without its password) and the id of its sealed secret.

use std::time::Duration;

use kalla_core::seal::Sealed;
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{MetadataDb, MetadataError, RowInsert, new_id, now};

/// What was registered: one table (a source) or one database (a connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Source,
    Connection,
}

impl Kind {
    /// The word errors and logs use.
    pub fn label(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Connection => "connection",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Self::Source => "sources",
            Self::Connection => "connections",
        }
    }

    fn name_column(self) -> &'static str {
        match self {
            Self::Source => "alias",
            Self::Connection => "name",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Self::Source => "src",
            Self::Connection => "conn",
        }
    }

    /// The columns of its table, in [`Registration`]'s order.
    fn columns(self) -> String {
        let location = match self {
            Self::Source => "uri",
            Self::Connection => "config_json",
        };
        format!(
            "id, {}, source_type, {location}, secret_id, created_at, updated_at",
            self.name_column()
        )
    }

    /// A connection keeps its URI inside a JSON object (its settings, as first stored).
    fn store_location(self, uri: &str) -> String {
        match self {
            Self::Source => uri.to_string(),
            Self::Connection => json!({ "uri": uri }).to_string(),
        }
    }

    /// The URI [`Kind::store_location`] stored; empty (and so unreadable later, with the
    /// record's name in the error) where a stored connection has none.
    fn read_location(self, stored: String) -> String {
        match self {
            Self::Source => stored,
            Self::Connection => serde_json::from_str::<Value>(&stored)
                .ok()
                .and_then(|config| config["uri"].as_str().map(str::to_string))
                .unwrap_or_default(),
        }
    }
}

/// How a lookup names its record.
#[derive(Debug, Clone, Copy)]
pub enum By<'a> {
    Name(&'a str),
    Id(&'a str),
}

impl By<'_> {
    fn column(self, kind: Kind) -> &'static str {
        match self {
            Self::Name(_) => kind.name_column(),
            Self::Id(_) => "id",
        }
    }

    fn value(&self) -> &str {
        match self {
            Self::Name(value) | Self::Id(value) => value,
        }
    }

    fn not_found(self, kind: Kind) -> MetadataError {
        MetadataError::NotFound {
            kind: kind.label(),
            name: self.value().to_string(),
        }
    }
}

/// A registered source or connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub kind: Kind,
    pub id: String,
    /// A source's alias or a connection's name.
    pub name: String,
    /// The name of the engine that reads it (the `source_type` users give).
    pub engine: String,
    /// The URI without its password.
    pub location: String,
    pub secret_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Registration {
    fn from_row(kind: Kind, row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            kind,
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            engine: row.try_get(2)?,
            location: kind.read_location(row.try_get(3)?),
            secret_id: row.try_get(4)?,
            created_at: row.try_get(5)?,
            updated_at: row.try_get(6)?,
        })
    }
}

/// The secret a record uses.
pub enum SecretRef {
    /// A password sealed for the new secret `id`, stored with the record.
    New { id: String, sealed: Sealed },
    /// A named secret already stored, by its id.
    Named(String),
}

impl SecretRef {
    fn id(&self) -> &str {
        match self {
            Self::New { id, .. } | Self::Named(id) => id,
        }
    }

    fn new_secret(&self) -> Option<(String, Sealed)> {
        match self {
            Self::New { id, sealed } => Some((id.clone(), sealed.clone())),
            Self::Named(_) => None,
        }
    }
}

/// What to register; `secret` is what holds the password `location` was stored without.
pub struct NewRegistration<'a> {
    pub kind: Kind,
    pub name: &'a str,
    pub engine: &'a str,
    pub location: &'a str,
    pub secret: Option<SecretRef>,
}

impl MetadataDb {
    /// Stores the record and its secret in one transaction.
    pub async fn register(&self, new: NewRegistration<'_>) -> Result<Registration, MetadataError> {
        let now = now();
        let kind = new.kind;
        let record = Registration {
            kind,
            id: new_id(kind.id_prefix()),
            name: new.name.to_string(),
            engine: new.engine.to_string(),
            location: new.location.to_string(),
            secret_id: new.secret.as_ref().map(|secret| secret.id().to_string()),
            created_at: now.clone(),
            updated_at: now,
        };
        let stored = kind.store_location(&record.location);
        let columns = kind.columns();
        let new_secret = new.secret.as_ref().and_then(SecretRef::new_secret);
        self.insert_with_secret(RowInsert {
            table: kind.table(),
            columns: &columns,
            values: vec![
                Some(record.id.as_str()),
                Some(record.name.as_str()),
                Some(record.engine.as_str()),
                Some(stored.as_str()),
                record.secret_id.as_deref(),
                Some(record.created_at.as_str()),
                Some(record.updated_at.as_str()),
            ],
            secret: new_secret.as_ref(),
            kind: kind.label(),
            name: new.name,
        })
        .await?;
        Ok(record)
    }

    /// Every record of `kind`, by name.
    pub async fn registrations(&self, kind: Kind) -> Result<Vec<Registration>, MetadataError> {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            kind.columns(),
            kind.table(),
            kind.name_column()
        );
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        Ok(rows
            .iter()
            .map(|row| Registration::from_row(kind, row))
            .collect::<Result<_, _>>()?)
    }

    pub async fn registration(&self, kind: Kind, by: By<'_>) -> Result<Registration, MetadataError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = $1",
            kind.columns(),
            kind.table(),
            by.column(kind)
        );
        let row = sqlx::query(&sql)
            .bind(by.value())
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| by.not_found(kind))?;
        Ok(Registration::from_row(kind, &row)?)
    }

    /// Deletes the record, a connection's tables (queuing the cache versions they served for
    /// deletion after `grace`), and its secret unless another record still uses it. One
    /// transaction.
    pub async fn unregister(&self, kind: Kind, by: By<'_>, grace: Duration) -> Result<(), MetadataError> {
        let mut tx = self.pool().begin().await?;
        // Writing first takes SQLite's write lock at once (a read-then-write transaction could
        // fail to upgrade its lock without waiting). Tables go before their connection: the
        // cascade would take their cache URLs with it.
        let cached = match kind {
            Kind::Source => Vec::new(),
            Kind::Connection => Self::delete_tables(&mut tx, by).await?,
        };
        let sql = format!(
            "DELETE FROM {} WHERE {} = $1 RETURNING secret_id",
            kind.table(),
            by.column(kind)
        );
        let deleted: Option<Option<String>> = sqlx::query_scalar(&sql)
            .bind(by.value())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(secret_id) = deleted else {
            tx.rollback().await?;
            return Err(by.not_found(kind));
        };
        for url in cached.into_iter().flatten() {
            Self::queue_deletion(&mut tx, &url, "connection deleted", grace).await?;
        }
        if let Some(secret_id) = secret_id {
            Self::delete_if_orphaned(&mut tx, &secret_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Points the record at `secret` (storing it first if new), and deletes the secret it used
    /// before unless that has a name or another record uses it. One transaction.
    pub async fn replace_secret(
        &self,
        kind: Kind,
        by: By<'_>,
        secret: SecretRef,
    ) -> Result<Registration, MetadataError> {
        let mut tx = self.pool().begin().await?;
        if let SecretRef::New { id, sealed } = &secret {
            Self::insert_secret(&mut tx, id, sealed).await?;
        }
        // Writing first takes SQLite's write lock at once; it returns the secret used so far.
        let sql = format!(
            "UPDATE {} SET updated_at = $1 WHERE {} = $2 RETURNING secret_id",
            kind.table(),
            by.column(kind)
        );
        let previous: Option<Option<String>> = sqlx::query_scalar(&sql)
            .bind(now())
            .bind(by.value())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(previous) = previous else {
            tx.rollback().await?;
            return Err(by.not_found(kind));
        };
        let sql = format!(
            "UPDATE {} SET secret_id = $1 WHERE {} = $2",
            kind.table(),
            by.column(kind)
        );
        sqlx::query(&sql)
            .bind(secret.id())
            .bind(by.value())
            .execute(&mut *tx)
            .await?;
        if let Some(previous) = previous.filter(|previous| previous != secret.id()) {
            Self::delete_if_orphaned(&mut tx, &previous).await?;
        }
        tx.commit().await?;
        self.registration(kind, by).await
    }

    /// Deletes the tables of the connection `by` names; their cache URLs.
    async fn delete_tables(
        tx: &mut Transaction<'_, Any>,
        by: By<'_>,
    ) -> Result<Vec<Option<String>>, sqlx::Error> {
        let sql = format!(
            "DELETE FROM tables WHERE connection_id IN (SELECT id FROM connections WHERE {} = $1) \
             RETURNING cache_url",
            by.column(Kind::Connection)
        );
        sqlx::query_scalar(&sql)
            .bind(by.value())
            .fetch_all(&mut **tx)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_keeps_its_uri_in_its_settings() {
        let stored = Kind::Connection.store_location("postgres://app@h/db");
        assert_eq!(stored, r#"{"uri":"postgres://app@h/db"}"#);
        assert_eq!(Kind::Connection.read_location(stored), "postgres://app@h/db");
        assert_eq!(Kind::Connection.read_location("{}".into()), "");
        assert_eq!(
            Kind::Source.read_location("file:///x.csv".into()),
            "file:///x.csv"
        );
    }

    #[test]
    fn lookups_use_the_kind_s_name_column() {
        assert_eq!(By::Name("x").column(Kind::Source), "alias");
        assert_eq!(By::Name("x").column(Kind::Connection), "name");
        assert_eq!(By::Id("x").column(Kind::Source), "id");
        assert!(Kind::Source.columns().starts_with("id, alias, source_type, uri"));
    }
}
