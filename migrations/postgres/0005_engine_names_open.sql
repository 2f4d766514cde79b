-- Sources and connections name the engine that reads them in `source_type`. Which engines exist
-- is for the runner's engine registry to say (it checks every registration), not for a CHECK
-- constraint: an engine added to Kalla must need no migration.
ALTER TABLE sources DROP CONSTRAINT IF EXISTS sources_source_type_check;
ALTER TABLE connections DROP CONSTRAINT IF EXISTS connections_source_type_check;
