"""/metrics read with Prometheus's own parser."""

from prometheus_client.parser import text_string_to_metric_families


def sample_values(text: str) -> tuple[dict[str, str], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    """Prometheus's own parser: {family: type} (each family once) and {(sample, labels): value}."""
    types: dict[str, str] = {}
    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in types, f"family {family.name} split in two"
        types[family.name] = family.type
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, values
