"""Where a sweep's rounds go: ``parquet`` (the record of truth) and ``mlflow`` (rebuilt from it).

Both take plain dicts and lists, never torch or ray objects. Import the one you need; neither
is imported here, so reading Parquet never pays for importing MLflow.
"""
