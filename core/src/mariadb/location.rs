//! MariaDB source locations: `mysql://user:pass@host:port/db?table=name` (or `mariadb://`;
//! `table=db.name` reads another database of the same server).

use url::Url;

use crate::ident::{Ident, QualifiedName};
use crate::pool::redact_connection_url;
use crate::tls::TlsSettings;
use crate::uri::parse_table_name;

/// Whether `url` is a MariaDB (MySQL) location.
pub fn is_mariadb_scheme(url: &Url) -> bool {
    matches!(url.scheme(), "mysql" | "mariadb")
}

/// A MariaDB table and the server it is read from. `Debug` shows no password.
#[derive(Clone, PartialEq, Eq)]
pub struct TableLocation {
    connection: Url,
    /// The schema is the table's database.
    table: QualifiedName,
}

impl TableLocation {
    pub fn parse(location: &Url) -> Result<Self, String> {
        let shown = redact_connection_url(location.as_str());
        if !is_mariadb_scheme(location) || location.host_str().is_none_or(str::is_empty) {
            return Err(format!(
                "expected mysql://user@host:port/database?table=name, got {shown}"
            ));
        }
        let table = location
            .query_pairs()
            .find(|(key, _)| key == "table")
            .map(|(_, value)| value.into_owned())
            .ok_or_else(|| format!("{shown} has no `table` parameter (…?table=name)"))?;
        let database = location.path().trim_start_matches('/');
        let table = match (table.contains('.'), database) {
            (true, _) => parse_table_name(&table).map_err(|e| e.to_string())?,
            (false, "") => return Err(format!("{shown} names no database: use table=database.name")),
            (false, database) => QualifiedName {
                schema: Ident::new(database).map_err(|e| e.to_string())?,
                name: Ident::new(table).map_err(|e| e.to_string())?,
            },
        };
        let mut connection = location.clone();
        let kept: Vec<(String, String)> = location
            .query_pairs()
            .filter(|(key, _)| key != "table")
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        connection.set_query(None);
        if !kept.is_empty() {
            connection.query_pairs_mut().extend_pairs(kept);
        }
        TlsSettings::of(connection.as_str()).map_err(|e| e.to_string())?;
        Ok(Self { connection, table })
    }

    pub fn table(&self) -> &QualifiedName {
        &self.table
    }

    /// The server's URL, password included: never log or show it.
    pub fn connection_url(&self) -> &str {
        self.connection.as_str()
    }

    pub fn redacted(&self) -> String {
        format!(
            "{}?table={}",
            redact_connection_url(self.connection.as_str()),
            self.table
        )
    }
}

impl std::fmt::Debug for TableLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TableLocation({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(location: &str) -> Result<TableLocation, String> {
        TableLocation::parse(&Url::parse(location).unwrap())
    }

    #[test]
    fn the_database_is_the_schema() {
        let location = parse("mysql://u:secret@db:3306/shop?table=orders&sslmode=require").unwrap();
        assert_eq!(location.table().to_string(), "shop.orders");
        assert_eq!(location.table().backquoted(), "`shop`.`orders`");
        assert_eq!(
            location.connection_url(),
            "mysql://u:secret@db:3306/shop?sslmode=require"
        );
        assert!(!format!("{location:?}").contains("secret"));
        let other = parse("mariadb://u@db/shop?table=ledger.entries").unwrap();
        assert_eq!(other.table().to_string(), "ledger.entries");
    }

    #[test]
    fn incomplete_locations_say_what_is_missing() {
        assert!(
            parse("mysql://u:secret@db/shop")
                .unwrap_err()
                .contains("no `table`")
        );
        assert!(
            parse("mysql://u@db/?table=t")
                .unwrap_err()
                .contains("names no database")
        );
        assert!(
            parse("postgres://u@db/x?table=t")
                .unwrap_err()
                .contains("expected mysql://")
        );
        let error = parse("mysql://u:secret@db/x?table=t&sslmode=sometimes").unwrap_err();
        assert!(!error.contains("secret"), "{error}");
    }
}
