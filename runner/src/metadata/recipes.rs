//! The `recipes` table: stored reconciliation recipes, by id and unique name.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{MetadataDb, MetadataError, RowInsert, new_id, now, unique_violation};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipeRecord {
    pub id: String,
    pub name: String,
    #[serde(skip)]
    pub body_json: String,
    pub created_at: String,
    pub updated_at: String,
}

impl FromRow<'_, AnyRow> for RecipeRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            body_json: row.try_get("body_json")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

const COLUMNS: &str = "id, name, body_json, created_at, updated_at";

fn not_found(id: &str) -> MetadataError {
    MetadataError::NotFound {
        kind: "recipe",
        name: id.to_string(),
    }
}

impl MetadataDb {
    pub async fn insert_recipe(&self, name: &str, body_json: &str) -> Result<RecipeRecord, MetadataError> {
        let now = now();
        let record = RecipeRecord {
            id: new_id("rcp"),
            name: name.to_string(),
            body_json: body_json.to_string(),
            created_at: now.clone(),
            updated_at: now,
        };
        self.insert_with_secret(RowInsert {
            table: "recipes",
            columns: COLUMNS,
            values: vec![
                Some(record.id.as_str()),
                Some(record.name.as_str()),
                Some(record.body_json.as_str()),
                Some(record.created_at.as_str()),
                Some(record.updated_at.as_str()),
            ],
            secret: None,
            kind: "recipe",
            name,
        })
        .await?;
        Ok(record)
    }

    pub async fn list_recipes(&self) -> Result<Vec<RecipeRecord>, MetadataError> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM recipes ORDER BY name"))
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// The recipe with this id, or else this name.
    pub async fn recipe(&self, id_or_name: &str) -> Result<RecipeRecord, MetadataError> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM recipes WHERE id = $1 OR name = $1 ORDER BY id = $1 DESC LIMIT 1"
        ))
        .bind(id_or_name)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| not_found(id_or_name))
    }

    pub async fn update_recipe(
        &self,
        id: &str,
        name: &str,
        body_json: &str,
    ) -> Result<RecipeRecord, MetadataError> {
        let updated =
            sqlx::query("UPDATE recipes SET name = $1, body_json = $2, updated_at = $3 WHERE id = $4")
                .bind(name)
                .bind(body_json)
                .bind(now())
                .bind(id)
                .execute(self.pool())
                .await
                .map_err(|e| unique_violation(e, "recipe", name))?;
        if updated.rows_affected() == 0 {
            return Err(not_found(id));
        }
        self.recipe(id).await
    }

    pub async fn delete_recipe(&self, id: &str) -> Result<(), MetadataError> {
        let deleted = sqlx::query("DELETE FROM recipes WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }
}
