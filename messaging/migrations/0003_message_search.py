"""Full-text search on PostgreSQL: a generated tsvector column and its GIN index.

Angle brackets become spaces first: the parser would take `<thanks>` for an
HTML tag and index nothing of it.

Other databases (the SQLite embedded default) get nothing here; search falls
back to a plain substring match there (messaging/search.py).
"""

from django.db import migrations

FORWARD = [
    "ALTER TABLE messaging_message ADD COLUMN search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, translate(coalesce(body, ''), '<>', '  '))) STORED",
    "CREATE INDEX message_search_gin ON messaging_message USING GIN (search_vector)",
]
BACKWARD = [
    "DROP INDEX IF EXISTS message_search_gin",
    "ALTER TABLE messaging_message DROP COLUMN IF EXISTS search_vector",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for sql in statements:
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("messaging", "0002_history_cursors_archive")]

    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD))]
