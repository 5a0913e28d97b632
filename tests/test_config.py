"""Configuration refused where it is defined, and explained in one line naming the key, never the value."""

from __future__ import annotations

import gc

import pytest
from pydantic import ValidationError

from worker import config, providers
from worker.config import ConfigError, ProvidersFile, Settings, trace_exporters
from worker.validation import explain


def test_every_configurable_dialect_has_an_implementation_and_no_other() -> None:
    assert set(config.DIALECTS) == set(providers.DIALECTS)


def test_a_bad_setting_is_explained_as_the_variable_that_sets_it() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(max_in_flight=0, log_level="LOUD")
    line = explain(info.value, env_prefix="BCW_")
    assert line.startswith("BCW_MAX_IN_FLIGHT: ") and "; BCW_LOG_LEVEL: " in line and "LOUD" not in line


def test_a_bad_providers_file_is_explained_by_dotted_key_without_the_value() -> None:
    raw = {"providers": {"p": {"dialect": "openai", "accounts": {"a": {"api_key_env": "K", "api_key_file": "/k"}}}}}
    raw["providers"]["p"]["base_url"] = "https://user:hunter2@gateway.example/v1"
    with pytest.raises(ValidationError) as info:
        ProvidersFile.model_validate(raw)
    line = explain(info.value)
    assert "providers.p.base_url: " in line and "providers.p.accounts.a: " in line and "hunter2" not in line
    assert explain(info.value, most=1).count(": ") == 1


def test_incoherent_kafka_security_is_refused_when_the_settings_are_made() -> None:
    with pytest.raises(ConfigError, match=r"BCW_KAFKA_SASL_USERNAME set but .*PLAINTEXT does not use SASL"):
        Settings(kafka_sasl_username="u")
    with pytest.raises(ConfigError, match="BCW_KAFKA_SASL_PASSWORD is empty"):
        Settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="u",
            kafka_sasl_password="",
        )


def test_trace_exporters_default_to_none_and_follow_an_otlp_endpoint() -> None:
    assert trace_exporters({}) == ()
    assert trace_exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ("otlp",)
    assert trace_exporters({"OTEL_TRACES_EXPORTER": "console, otlp,none"}) == ("console", "otlp")


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ],
)
def test_an_exporter_this_build_cannot_run_fails_the_settings(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], named: str
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        Settings()


def test_the_worker_collects_young_garbage_every_10000_allocations_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Measured in docs/benchmarks.md: at CPython's 700 the worker spent 12-16 % more CPU per command."""
    from worker import cli, process

    seen: list[tuple[int, int, int]] = []

    def run(main: object, choice: str) -> int:
        main.close()  # type: ignore[attr-defined]  # the coroutine of app.run, never started
        seen.append(gc.get_threshold())
        return 0

    before = gc.get_threshold()
    monkeypatch.setattr(process, "run", run)
    monkeypatch.setattr(cli, "configure_logging", lambda *_: None)  # the root logger stays pytest's
    try:
        monkeypatch.delenv("BCW_GC_GEN0_THRESHOLD", raising=False)
        assert cli.main(["run"]) == 0
        monkeypatch.setenv("BCW_GC_GEN0_THRESHOLD", "700")
        assert cli.main(["run"]) == 0
    finally:
        gc.set_threshold(*before)
    assert seen == [(10_000, *before[1:]), (700, *before[1:])]
    with pytest.raises(ValidationError, match="gc_gen0_threshold"):
        Settings(gc_gen0_threshold=0)  # 0 would switch the collector off


def test_tuning_the_collector_keeps_the_older_generations_ratios() -> None:
    from worker import process

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 7, 3)
        process.tune_collector(12_345)
        assert gc.get_threshold() == (12_345, 7, 3)
    finally:
        gc.set_threshold(*before)


def test_a_bcw_variable_that_is_no_setting_is_named_for_the_start_up_warning() -> None:
    from worker.config import unknown_settings

    environ = {"BCW_GROUP_ID": "g", "BCW_GRUOP_ID": "typo", "BCW_WEBHOOKS_PORT": "8088", "HOME": "/root"}
    assert unknown_settings(environ) == ["BCW_GRUOP_ID"]
