//! Submitting a job: the request checked (a recipe against its sources, SQL parsed, a callback
//! URL's scheme), then recorded and queued, or refused at once when the queue is full.

use std::collections::BTreeMap;

use kalla_core::recon::{ParamValues, Recipe, params};
use serde::{Deserialize, Serialize};

use super::callbacks::check_callback_url;
use super::views::view;
use super::{JobError, JobRequest, JobView, Jobs, failed};
use crate::metadata::{NewJob, new_id};

/// What a reconciliation run was given and read: its parameter values, and where each source
/// was read with them in place (no password).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunInputs {
    pub params: ParamValues,
    pub sources: BTreeMap<String, String>,
}

/// What a query job stores.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct QuerySpec {
    pub(super) sql: String,
    pub(super) live: bool,
}

impl Jobs {
    pub async fn submit(&self, request: JobRequest) -> Result<JobView, JobError> {
        self.submit_as(new_id("job"), request).await
    }

    /// Submits the job under the id `id`; a job with that id already made is a
    /// [`MetadataError::Duplicate`](crate::metadata::MetadataError::Duplicate).
    pub async fn submit_as(&self, id: String, request: JobRequest) -> Result<JobView, JobError> {
        let (job_type, recipe_id, spec_json, inputs_json, callback_url) = match request {
            JobRequest::Recon {
                recipe_id,
                recipe,
                params,
                callback_url,
            } => {
                let (recipe_id, recipe) = match one_recipe(recipe_id, recipe)? {
                    RecipeRef::Stored(id) => {
                        let stored = self.inner.recipes.get(&id).await?;
                        (Some(stored.id), stored.recipe)
                    }
                    RecipeRef::Inline(recipe) if recipe.carry_forward => {
                        return Err(JobError::InvalidRequest(
                            "carry_forward keeps open items for a stored recipe: store it and submit its recipe_id"
                                .into(),
                        ));
                    }
                    RecipeRef::Inline(recipe) => (None, *recipe),
                };
                let (recipe, inputs) = self.with_params(&recipe, &params).await?;
                let spec = serde_json::to_string(&recipe).map_err(failed)?;
                let inputs = serde_json::to_string(&inputs).map_err(failed)?;
                ("recon", recipe_id, spec, Some(inputs), callback_url)
            }
            JobRequest::Query {
                sql,
                live,
                callback_url,
            } => {
                crate::catalog::table_references(&sql)?;
                let spec = serde_json::to_string(&QuerySpec { sql, live }).map_err(failed)?;
                ("query", None, spec, None, callback_url)
            }
        };
        if let Some(url) = &callback_url {
            self.check_callback(url).await?;
        }
        let permit = self
            .inner
            .queue
            .try_reserve()
            .map_err(|_| JobError::QueueFull(self.inner.settings.queue_capacity))?;
        let until = self.lease_end();
        let job = NewJob {
            id: &id,
            job_type,
            recipe_id: recipe_id.as_deref(),
            spec_json: &spec_json,
            inputs_json: inputs_json.as_deref(),
            callback_url: callback_url.as_deref(),
        };
        let record = self.inner.db.insert_job(job, self.lease(&until)).await?;
        permit.send(id);
        tracing::info!(job = %record.id, job_type, "job queued");
        Ok(view(record))
    }
}

impl Jobs {
    /// Checks a callback URL as a job's would be.
    pub async fn check_callback(&self, url: &str) -> Result<(), JobError> {
        check_callback_url(url, &self.inner.settings.callbacks)
            .await
            .map(drop)
    }

    /// The recipe a run with `given` parameters runs, checked against its sources as they are
    /// read with them, and what the run is given and reads.
    async fn with_params(
        &self,
        recipe: &Recipe,
        given: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(Recipe, RunInputs), JobError> {
        let values = params::resolve(&recipe.params, given)?;
        let resolved = recipe.with_params(&values)?;
        self.inner.recipes.check(&resolved, &values).await?;
        let mut sources = BTreeMap::new();
        for side in [&resolved.left, &resolved.right] {
            if let Some(location) = self.inner.catalog.source_location(&side.source, &values).await? {
                sources.insert(side.source.clone(), location);
            }
        }
        Ok((
            resolved,
            RunInputs {
                params: values,
                sources,
            },
        ))
    }
}

/// The recipe a recon job names: stored (by id) or given whole.
#[derive(Debug)]
enum RecipeRef {
    Stored(String),
    Inline(Box<Recipe>),
}

fn one_recipe(recipe_id: Option<String>, recipe: Option<Box<Recipe>>) -> Result<RecipeRef, JobError> {
    match (recipe_id, recipe) {
        (Some(id), None) => Ok(RecipeRef::Stored(id)),
        (None, Some(recipe)) => Ok(RecipeRef::Inline(recipe)),
        _ => Err(JobError::InvalidRequest(
            "a recon job needs exactly one of recipe_id and recipe".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recon_job_names_exactly_one_recipe() {
        let recipe: Box<Recipe> = Box::new(
            serde_json::from_value(serde_json::json!({
                "name": "r", "left": {"source": "a", "key": ["id"]}, "right": {"source": "b", "key": ["id"]},
                "rules": []
            }))
            .unwrap(),
        );
        assert!(matches!(one_recipe(Some("rcp_1".into()), None), Ok(RecipeRef::Stored(id)) if id == "rcp_1"));
        assert!(matches!(
            one_recipe(None, Some(recipe.clone())),
            Ok(RecipeRef::Inline(_))
        ));
        for (id, inline) in [(None, None), (Some("rcp_1".to_string()), Some(recipe))] {
            let error = one_recipe(id, inline).unwrap_err().to_string();
            assert!(error.contains("exactly one of recipe_id and recipe"), "{error}");
        }
    }
}
