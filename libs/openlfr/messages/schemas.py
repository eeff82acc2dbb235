"""JSON Schemas of the wire messages, written to ``docs/schemas/`` for subscribers.

``python -m openlfr.messages.schemas`` rewrites them; a test fails when the committed files
differ from the models, so the published contract cannot drift silently.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from openlfr import paths
from openlfr.messages import topics
from openlfr.messages.models import Alert, DeadLetter, Embeddings, Faces, Frame, Match

TOPIC_MODELS: dict[str, type[BaseModel]] = {
    topics.FRAMES.name: Frame,
    topics.FACES.name: Faces,
    topics.EMBEDDINGS.name: Embeddings,
    topics.MATCHES.name: Match,
    topics.ALERTS.name: Alert,
    topics.DEADLETTER.name: DeadLetter,
}

SCHEMA_DIR = paths.REPO_ROOT / "docs" / "schemas"


def render() -> dict[str, str]:
    """File name -> JSON Schema text (serialization mode: what is on the wire)."""
    out = {}
    for topic, model in TOPIC_MODELS.items():
        schema = model.model_json_schema(mode="serialization")
        schema["$id"] = f"https://openlfr.example/schemas/{topic}.json"
        schema["x-topic"] = topic
        out[f"{topic}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def main() -> int:
    """Write every schema file."""
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (SCHEMA_DIR / name).write_text(text)
        print(SCHEMA_DIR / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
