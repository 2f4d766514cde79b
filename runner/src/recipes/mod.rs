//! Recipes: stored after they check against their sources' real schemas, and tried on samples
//! ([`dry_run`]).

pub mod dry_run;

use datafusion::arrow::datatypes::Schema;
use kalla_core::recon::params::{self, ParamError};
use kalla_core::recon::{CheckedRecipe, ParamValues, Recipe, ReconError};
use serde::Serialize;
use thiserror::Error;

use crate::catalog::{Catalog, CatalogError};
use crate::cluster::ClusterEndpoint;
use crate::metadata::{MetadataDb, MetadataError, RecipeRecord};

#[derive(Debug, Error)]
pub enum RecipeError {
    #[error(transparent)]
    Invalid(#[from] ReconError),
    #[error(transparent)]
    Params(#[from] ParamError),
    #[error("{side}.source: {error}")]
    Source { side: &'static str, error: CatalogError },
    #[error("the sample cannot be read: {0}")]
    Sample(String),
    #[error("stored recipe {0} cannot be read: {1}")]
    Unreadable(String, String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// A stored recipe as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecipeView {
    pub id: String,
    pub name: String,
    pub recipe: Recipe,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone)]
pub struct Recipes {
    db: MetadataDb,
    catalog: Catalog,
    cluster: ClusterEndpoint,
}

impl Recipes {
    pub fn new(db: MetadataDb, catalog: Catalog, cluster: ClusterEndpoint) -> Self {
        Self { db, catalog, cluster }
    }

    pub async fn create(&self, recipe: Recipe) -> Result<RecipeView, RecipeError> {
        self.check_to_store(&recipe).await?;
        let record = self.db.insert_recipe(&recipe.name, &body(&recipe)).await?;
        view(record)
    }

    pub async fn update(&self, id: &str, recipe: Recipe) -> Result<RecipeView, RecipeError> {
        let existing = self.db.recipe(id).await?;
        self.check_to_store(&recipe).await?;
        view(
            self.db
                .update_recipe(&existing.id, &recipe.name, &body(&recipe))
                .await?,
        )
    }

    pub async fn list(&self) -> Result<Vec<RecipeView>, RecipeError> {
        self.db.list_recipes().await?.into_iter().map(view).collect()
    }

    /// By id or name.
    pub async fn get(&self, id: &str) -> Result<RecipeView, RecipeError> {
        view(self.db.recipe(id).await?)
    }

    pub async fn delete(&self, id: &str) -> Result<(), RecipeError> {
        let existing = self.db.recipe(id).await?;
        Ok(self.db.delete_recipe(&existing.id).await?)
    }

    /// Checks a recipe before it is stored: its parameter declarations, then the recipe against
    /// its sources' schemas with the defaults (or samples of their types) in its filters. A
    /// source whose location names a parameter without a default cannot be read before a run
    /// gives it: such a recipe is checked against its sources when a job runs it.
    async fn check_to_store(&self, recipe: &Recipe) -> Result<(), RecipeError> {
        let sample = recipe.with_sample_params()?;
        let defaults = params::defaults(&recipe.params);
        match self.check(&sample, &defaults).await {
            Err(RecipeError::Source {
                error:
                    CatalogError::Params {
                        error: ParamError::Undeclared { name, .. },
                        ..
                    },
                ..
            }) if recipe.params.iter().any(|param| param.name == name) => Ok(()),
            checked => checked.map(drop),
        }
    }

    /// A run's recipe (parameters in place) checked against its sources' current schemas, their
    /// locations given the run's `values` (read without caching anything).
    pub async fn check(&self, recipe: &Recipe, values: &ParamValues) -> Result<CheckedRecipe, RecipeError> {
        let session = self.cluster.session();
        let mut schemas: Vec<Schema> = Vec::with_capacity(2);
        for (side, source) in [("left", &recipe.left.source), ("right", &recipe.right.source)] {
            let frame = self
                .catalog
                .read(&session, source, true, values)
                .await
                .map_err(|error| RecipeError::Source { side, error })?;
            schemas.push(frame.schema().as_arrow().clone());
        }
        Ok(recipe.check(&schemas[0], &schemas[1])?)
    }
}

fn body(recipe: &Recipe) -> String {
    serde_json::to_string(recipe).expect("a recipe serializes")
}

fn view(record: RecipeRecord) -> Result<RecipeView, RecipeError> {
    let recipe = serde_json::from_str(&record.body_json)
        .map_err(|e| RecipeError::Unreadable(record.id.clone(), e.to_string()))?;
    Ok(RecipeView {
        id: record.id,
        name: record.name,
        recipe,
        created_at: record.created_at,
        updated_at: record.updated_at,
    })
}
