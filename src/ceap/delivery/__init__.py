"""The delivery layer: from stored candidates to delivered actions, safely."""
