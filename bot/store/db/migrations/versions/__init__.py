"""One module per revision; Alembic reads them in the order their ``down_revision`` says."""
