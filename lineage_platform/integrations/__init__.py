"""The only places DVC, MLflow and OpenLineage are imported; each translates their errors."""
