"""Settings: defaults < vidqueue.toml < VIDQUEUE_* variables < flags, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidqueue.catalog import Catalog
from vidqueue.config import Credentials, Settings, load_settings
from vidqueue.engines.emulator import EmulatorEngine
from vidqueue.engines.gmi import GmiEngine
from vidqueue.engines.kling import KlingEngine
from vidqueue.errors import ConfigError
from vidqueue.worker.engines import build_engines, describe_routes

TURBO = "kling-v2-5-turbo"
MASTER = "Kling-Text2Video-V2-Master"

FULL_TOML = f"""
host = "0.0.0.0"
port = 9100
data_dir = "/srv/vq"
workers = 3

[engines.emulator]
latency_s = 2.5
failure_rate = 0.25

[worker]
lease_s = 30
max_attempts = 4

[images]
fetch_timeout_s = 3

[models."{TURBO}"]
engine = "emulator"
"""


def write(tmp_path: Path, text: str, name: str = "vidqueue.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env=env or {})
    return caught.value.message


# -- defaults ----------------------------------------------------------------------------------------------


def test_defaults_without_file_or_environment() -> None:
    s = load_settings(env={})
    assert s.host == "127.0.0.1"
    assert s.port == 8000
    assert s.data_dir == Path("./vidqueue-data")
    assert s.workers == 2
    assert s.database_url is None
    assert s.public_url is None
    assert s.allow_private_urls is False
    assert s.media_url_ttl_s == 24 * 3600
    assert s.engines.emulator.latency_s == 0.0
    assert s.engines.emulator.failure_rate == 0.0
    assert s.worker.lease_s == 60.0
    assert s.worker.max_attempts == 2
    assert s.images.fetch_timeout_s == 10.0
    assert s.images.max_bytes == 10 * 1024 * 1024
    assert s.models == {}
    assert s.base_url == "http://127.0.0.1:8000"


def test_default_database_is_sqlite_inside_the_data_dir(tmp_path: Path) -> None:
    s = load_settings(env={"VIDQUEUE_DATA_DIR": str(tmp_path / "d")})
    assert s.db_url == f"sqlite:///{(tmp_path / 'd' / 'vidqueue.db').resolve()}"
    given = load_settings(env={"VIDQUEUE_DATABASE_URL": "postgresql://db/vq"})
    assert given.db_url == "postgresql://db/vq"


def test_storage_and_s3_endpoints_come_from_the_environment(tmp_path: Path) -> None:
    from vidqueue.bootstrap import describe_storage, describe_store

    s = load_settings(
        env={
            "VIDQUEUE_STORAGE": "s3://media/vq/",
            "VIDQUEUE_S3_ENDPOINT_URL": "http://minio:9000",
            "VIDQUEUE_S3_PUBLIC_ENDPOINT_URL": "https://media.example.com",
            "VIDQUEUE_DATABASE_URL": "postgresql://vq:secret@db:5432/vq",
        }
    )
    assert (s.storage, s.s3_endpoint_url, s.s3_public_endpoint_url) == (
        "s3://media/vq/",
        "http://minio:9000",
        "https://media.example.com",
    )
    assert describe_storage(s) == "s3://media/vq/ at http://minio:9000"
    assert describe_store(s) == "postgresql://vq:***@db:5432/vq"  # logs never show the password
    local = load_settings(env={"VIDQUEUE_DATA_DIR": str(tmp_path / "d")})
    assert local.storage is None and describe_storage(local) == str((tmp_path / "d" / "media").resolve())


def test_postgres_urls_get_the_psycopg_driver() -> None:
    from vidqueue.store.postgres import driver_url, libpq_url

    assert driver_url("postgresql://u:p@h:5/db?sslmode=require") == "postgresql+psycopg://u:p@h:5/db?sslmode=require"
    assert driver_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert driver_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert libpq_url("postgresql+psycopg://u:p@h/db") == "postgresql://u:p@h/db"


def test_real_environment_is_read_when_no_env_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDQUEUE_PORT", "8765")
    assert load_settings().port == 8765
    assert load_settings(env={}).port == 8000  # an explicit env replaces os.environ entirely


# -- the TOML file -----------------------------------------------------------------------------------------


def test_toml_file_sets_top_level_and_nested_values(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, FULL_TOML), env={})
    assert s.host == "0.0.0.0"
    assert s.port == 9100
    assert s.data_dir == Path("/srv/vq")
    assert s.workers == 3
    assert s.engines.emulator.latency_s == 2.5
    assert s.engines.emulator.failure_rate == 0.25
    assert s.worker.lease_s == 30.0
    assert s.worker.max_attempts == 4
    assert s.worker.heartbeat_s == 10.0  # unset keys of a set section keep their defaults
    assert s.images.fetch_timeout_s == 3.0
    assert s.engine_for(TURBO) == "emulator"


def test_config_path_can_come_from_vidqueue_config_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 9200\n")
    assert load_settings(env={"VIDQUEUE_CONFIG": str(path)}).port == 9200


def test_explicit_config_path_wins_over_vidqueue_config_variable(tmp_path: Path) -> None:
    explicit = write(tmp_path, "port = 9300\n", "a.toml")
    from_env = write(tmp_path, "port = 9400\n", "b.toml")
    assert load_settings(explicit, env={"VIDQUEUE_CONFIG": str(from_env)}).port == 9300


def test_empty_toml_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), env={}) == load_settings(env={})


# -- environment variables ---------------------------------------------------------------------------------


def test_env_vars_override_the_toml_file(tmp_path: Path) -> None:
    env = {
        "VIDQUEUE_PORT": "9555",
        "VIDQUEUE_DATA_DIR": str(tmp_path / "from-env"),
        "VIDQUEUE_EMULATOR_LATENCY_S": "0.5",
        "VIDQUEUE_EMULATOR_FAILURE_RATE": "1",
        "VIDQUEUE_ALLOW_PRIVATE_URLS": "1",
        "VIDQUEUE_LEASE_S": "7",
        "VIDQUEUE_IMAGE_FETCH_TIMEOUT_S": "2",
    }
    s = load_settings(write(tmp_path, FULL_TOML), env=env)
    assert s.port == 9555
    assert s.data_dir == tmp_path / "from-env"
    assert s.engines.emulator.latency_s == 0.5
    assert s.engines.emulator.failure_rate == 1.0
    assert s.allow_private_urls is True
    assert s.worker.lease_s == 7.0
    assert s.images.fetch_timeout_s == 2.0
    # What the environment leaves alone still comes from the file.
    assert s.workers == 3
    assert s.worker.max_attempts == 4


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("0", False), ("false", False)])
def test_allow_private_urls_variable_reads_common_boolean_spellings(raw: str, expected: bool) -> None:
    assert load_settings(env={"VIDQUEUE_ALLOW_PRIVATE_URLS": raw}).allow_private_urls is expected


def test_empty_env_var_is_ignored(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "port = 9100\n"), env={"VIDQUEUE_PORT": "", "VIDQUEUE_HOST": ""})
    assert s.port == 9100
    assert s.host == "127.0.0.1"


def test_unrelated_env_vars_are_ignored() -> None:
    s = load_settings(env={"VIDQUEUE_NO_SUCH_SETTING": "x", "PORT": "1234", "vidqueue_port": "1"})
    assert s == load_settings(env={})


# -- flags (overrides) -------------------------------------------------------------------------------------


def test_overrides_beat_env_and_toml(tmp_path: Path) -> None:
    env = {"VIDQUEUE_PORT": "9555", "VIDQUEUE_DATA_DIR": "/from/env", "VIDQUEUE_WORKERS": "5"}
    s = load_settings(
        write(tmp_path, FULL_TOML),
        env=env,
        overrides={"port": 9777, "data_dir": tmp_path / "flag", "engines.emulator.failure_rate": 0.75},
    )
    assert s.port == 9777
    assert s.data_dir == tmp_path / "flag"
    assert s.engines.emulator.failure_rate == 0.75
    assert s.workers == 5  # not overridden: the env value stands


def test_none_overrides_leave_lower_layers_alone(tmp_path: Path) -> None:
    s = load_settings(
        write(tmp_path, "port = 9100\n"),
        env={"VIDQUEUE_WORKERS": "0"},
        overrides={"port": None, "workers": None, "host": None},
    )
    assert (s.port, s.workers, s.host) == (9100, 0, "127.0.0.1")


# -- invalid values ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "setting"),
    [
        ("[engines.emulator]\nfailure_rate = 2\n", "engines.emulator.failure_rate"),
        ("[engines.emulator]\nfailure_rate = -0.1\n", "engines.emulator.failure_rate"),
        ("[engines.emulator]\nlatency_s = -1\n", "engines.emulator.latency_s"),
        ("port = -1\n", "port"),
        ("port = 65536\n", "port"),
        ('port = "eighty"\n', "port"),
        ("workers = -1\n", "workers"),
        ("[worker]\nlease_s = 0\n", "worker.lease_s"),
        ("[worker]\nmax_attempts = 0\n", "worker.max_attempts"),
        ("[images]\nfetch_timeout_s = 0\n", "images.fetch_timeout_s"),
        ("no_such_setting = 1\n", "no_such_setting"),
        ("[worker]\nlease = 5\n", "worker.lease"),
        ("[engines.emulatr]\nlatency_s = 1\n", "engines.emulatr"),
        (f'[models."{TURBO}"]\nengine = "warp-drive"\n', f"models.{TURBO}.engine"),
        (f'[models."{TURBO}"]\nengin = "emulator"\n', f"models.{TURBO}.engin"),
        (
            '[models."w"]\nfamily = "wan2.1-t2v"\nsteps = 9\nmax_steps = 8\n',
            "models.w: Value error, steps (9) must not",
        ),
        ('[models."w"]\nfamily = "wan2.1-t2v"\nmax_steps = 0\n', "models.w.max_steps"),
        ('[models."w"]\nattention_backend = "flash; rm -rf"\n', "models.w.attention_backend"),
        ('[engines.diffusers]\nattention_backend = "Flash"\n', "engines.diffusers.attention_backend"),
        ('[engines.diffusers]\ncompile = "yes please"\n', "engines.diffusers.compile"),
        ('[models."w"]\nscheduler = "diffusers.UniPC"\n', "models.w.scheduler"),
        ('[models."w"]\nguidance = -1\n', "models.w.guidance"),
        ('[models."w"]\nlora = [{ scale = 1.0 }]\n', "models.w.lora.0.path"),
        ('[models."w"]\nlora = [{ path = "a.safetensors", scale = 11 }]\n', "models.w.lora.0.scale"),
        ('[models."w"]\nlora = [{ path = "a", target = "vae" }]\n', "models.w.lora.0.target"),
        ('[models."w"]\ncache = { kind = "fastest" }\n', "models.w.cache.kind"),
        ('[models."w"]\ncache = { kind = "first_block", threshold = 0 }\n', "models.w.cache.threshold"),
        ('[models."w"]\nscheduler_options = { shift = [1, 2] }\n', "models.w.scheduler_options.shift"),
    ],
)
def test_invalid_toml_value_raises_config_error_naming_the_setting(tmp_path: Path, text: str, setting: str) -> None:
    message = config_error(tmp_path, text)
    assert setting in message


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"VIDQUEUE_EMULATOR_FAILURE_RATE": "2"}, "engines.emulator.failure_rate"),
        ({"VIDQUEUE_EMULATOR_LATENCY_S": "soon"}, "engines.emulator.latency_s"),
        ({"VIDQUEUE_PORT": "-1"}, "port"),
        ({"VIDQUEUE_PORT": "http"}, "port"),
        ({"VIDQUEUE_ALLOW_PRIVATE_URLS": "maybe"}, "allow_private_urls"),
        ({"VIDQUEUE_LEASE_S": "0"}, "worker.lease_s"),
    ],
)
def test_invalid_env_value_raises_config_error_naming_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env)
    assert setting in caught.value.message


def test_invalid_override_raises_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, overrides={"port": 70000})
    assert "port" in caught.value.message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    message = config_error(tmp_path, "port = -1\n[engines.emulator]\nfailure_rate = 2\n")
    assert "port" in message
    assert "engines.emulator.failure_rate" in message


def test_unparsable_toml_raises_config_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "port = \n[engines\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert str(path) in caught.value.message
    assert "TOML" in caught.value.message


def test_missing_config_file_raises_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert str(path) in caught.value.message
    assert "does not exist" in caught.value.message


def test_missing_file_named_by_vidqueue_config_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"VIDQUEUE_CONFIG": str(path)})
    assert str(path) in caught.value.message


def test_config_path_that_is_a_directory_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, env={})
    assert str(tmp_path) in caught.value.message


def test_config_file_that_is_not_utf8_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'log_level = "d\xe9bug"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert str(path) in caught.value.message


def test_section_given_as_a_scalar_raises_config_error_even_with_an_env_override(tmp_path: Path) -> None:
    message = config_error(tmp_path, 'engines = "emulator"\n', env={"VIDQUEUE_EMULATOR_LATENCY_S": "1"})
    assert "engines" in message


# -- base_url ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", "8000", "http://127.0.0.1:8000"),
        ("0.0.0.0", "9000", "http://127.0.0.1:9000"),
        ("::", "9000", "http://127.0.0.1:9000"),
        ("::1", "9001", "http://[::1]:9001"),
        ("fd00::5", "80", "http://[fd00::5]:80"),
        ("vq.internal", "8080", "http://vq.internal:8080"),
    ],
)
def test_base_url_defaults_to_host_and_port(host: str, port: str, expected: str) -> None:
    assert load_settings(env={"VIDQUEUE_HOST": host, "VIDQUEUE_PORT": port}).base_url == expected


def test_public_url_wins_over_host_and_port_and_loses_its_trailing_slash() -> None:
    s = load_settings(env={"VIDQUEUE_PUBLIC_URL": "https://video.example.com/", "VIDQUEUE_PORT": "9000"})
    assert s.public_url == "https://video.example.com"
    assert s.base_url == "https://video.example.com"


# -- engine_for --------------------------------------------------------------------------------------------


def test_engine_for_is_the_emulator_when_no_route_is_configured() -> None:
    s = load_settings(env={})
    assert s.engine_for(TURBO) == "emulator"
    assert s.engine_for(MASTER) == "emulator"
    assert s.engine_for("any-other-model") == "emulator"


def test_engine_for_follows_the_models_table(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, f'[models."{TURBO}"]\nengine = "kling"\n'), env={})
    assert s.engine_for(TURBO) == "kling"
    assert s.engine_for(MASTER) == "emulator"
    assert s.models[TURBO].engine == "kling"


def test_model_route_without_engine_defaults_to_the_emulator(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, f'[models."{MASTER}"]\n'), env={})
    assert s.engine_for(MASTER) == "emulator"


def test_settings_survive_a_json_round_trip_as_handed_to_worker_processes(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, FULL_TOML), env={"VIDQUEUE_ALLOW_PRIVATE_URLS": "1"})
    assert Settings.model_validate_json(s.model_dump_json()) == s


# -- upstream engines: routing from credentials, their settings ----------------------------------------------

KLING_KEYS = {"KLING_ACCESS_KEY": "ak-test", "KLING_SECRET_KEY": "sk-test-0123456789abcdef0123456789"}
GMI_KEYS = {"GMI_API_KEY": "gmi-test"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (KLING_KEYS, "kling"),
        (KLING_KEYS | GMI_KEYS, "kling"),
        (GMI_KEYS, "gmi"),
        ({"KLING_ACCESS_KEY": "ak-test", **GMI_KEYS}, "gmi"),  # one Kling key is not enough
        ({"KLING_SECRET_KEY": "sk-test"}, "emulator"),
        ({"KLING_ACCESS_KEY": "", "KLING_SECRET_KEY": "", "GMI_API_KEY": ""}, "emulator"),  # empty counts as unset
        ({}, "emulator"),
    ],
)
def test_default_engine_follows_the_credentials_in_the_environment(env: dict[str, str], expected: str) -> None:
    s = load_settings(env=env)
    assert s.default_engine == expected
    assert s.engine_for(TURBO) == expected
    assert s.engine_for(MASTER) == expected


def test_default_engine_variable_wins_over_the_credentials() -> None:
    s = load_settings(env={**KLING_KEYS, "VIDQUEUE_DEFAULT_ENGINE": "emulator"})
    assert s.default_engine == "emulator" and s.engine_for(TURBO) == "emulator"
    s = load_settings(env={**KLING_KEYS, "VIDQUEUE_DEFAULT_ENGINE": "gmi"})
    assert s.engine_for(MASTER) == "gmi"


def test_default_engine_in_the_file_wins_over_the_credentials(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, 'default_engine = "emulator"\n'), env=KLING_KEYS)
    assert s.default_engine == "emulator" and s.engine_for(TURBO) == "emulator"


def test_a_models_table_wins_over_the_default_engine(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, f'[models."{TURBO}"]\nengine = "emulator"\n'), env=KLING_KEYS)
    assert s.engine_for(TURBO) == "emulator"
    assert s.engine_for(MASTER) == "kling"


def test_invalid_default_engine_raises_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"VIDQUEUE_DEFAULT_ENGINE": "warp-drive"})
    assert "default_engine" in caught.value.message


def test_credentials_are_read_from_the_environment_only_when_set() -> None:
    creds = Credentials.from_env({**KLING_KEYS, "GMI_API_KEY": ""})
    assert creds.kling_access_key == "ak-test" and creds.kling and creds.gmi_api_key is None
    assert Credentials.from_env({}) == Credentials()
    assert Credentials().default_engine() == "emulator"


def test_upstream_settings_defaults() -> None:
    s = load_settings(env={})
    assert s.engines.kling.base_url == "https://api-singapore.klingai.com"
    assert s.engines.gmi.base_url == "https://console.gmicloud.ai"
    assert s.engines.kling.concurrency == 4 and s.engines.gmi.concurrency == 4
    assert s.engines.kling.retry_deadline_s == 900.0 and s.engines.kling.max_wait_s == 7200.0


def test_upstream_env_vars_are_read() -> None:
    env = {
        "VIDQUEUE_KLING_BASE_URL": "https://api.klingai.com/",
        "VIDQUEUE_KLING_CONCURRENCY": "7",
        "VIDQUEUE_GMI_BASE_URL": "http://127.0.0.1:9999",
        "VIDQUEUE_GMI_CONCURRENCY": "12",
    }
    s = load_settings(env=env)
    assert s.engines.kling.base_url == "https://api.klingai.com"  # the trailing slash goes
    assert s.engines.kling.concurrency == 7
    assert s.engines.gmi.base_url == "http://127.0.0.1:9999"
    assert s.engines.gmi.concurrency == 12


def test_upstream_settings_come_from_the_file(tmp_path: Path) -> None:
    text = "[engines.kling]\npoll_interval_s = 0.5\nretry_deadline_s = 60\n[engines.gmi]\nmax_wait_s = 30\n"
    s = load_settings(write(tmp_path, text), env={"VIDQUEUE_KLING_CONCURRENCY": "2"})
    assert s.engines.kling.poll_interval_s == 0.5 and s.engines.kling.retry_deadline_s == 60.0
    assert s.engines.kling.concurrency == 2  # the environment adds to the file's section
    assert s.engines.gmi.max_wait_s == 30.0


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"VIDQUEUE_KLING_BASE_URL": "api.klingai.com"}, "engines.kling.base_url"),
        ({"VIDQUEUE_GMI_BASE_URL": "ftp://console.gmicloud.ai"}, "engines.gmi.base_url"),
        ({"VIDQUEUE_GMI_CONCURRENCY": "0"}, "engines.gmi.concurrency"),
        ({"VIDQUEUE_KLING_CONCURRENCY": "many"}, "engines.kling.concurrency"),
    ],
)
def test_invalid_upstream_env_value_raises_config_error_naming_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env)
    assert setting in caught.value.message


def test_base_url_without_a_scheme_in_the_file_raises_config_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[engines.kling]\nbase_url = "api-singapore.klingai.com"\n')
    assert "engines.kling.base_url" in message and "http" in message


# -- build_engines and describe_routes -----------------------------------------------------------------------


def test_build_engines_refuses_kling_routes_without_kling_keys() -> None:
    settings = load_settings(env={"VIDQUEUE_DEFAULT_ENGINE": "kling"})
    for creds in (Credentials(), Credentials(kling_access_key="ak-test"), Credentials(gmi_api_key="gmi-test")):
        with pytest.raises(ConfigError) as caught:
            build_engines(settings, Catalog(), creds)
        assert "KLING_ACCESS_KEY" in caught.value.message and TURBO in caught.value.message


def test_build_engines_refuses_gmi_routes_without_a_gmi_key() -> None:
    settings = load_settings(env={"VIDQUEUE_DEFAULT_ENGINE": "gmi"})
    with pytest.raises(ConfigError) as caught:
        build_engines(settings, Catalog(), Credentials(kling_access_key="a", kling_secret_key="s"))
    assert "GMI_API_KEY" in caught.value.message


def test_build_engines_makes_one_kling_engine_for_its_models() -> None:
    settings = load_settings(env={**KLING_KEYS, "VIDQUEUE_KLING_CONCURRENCY": "3"})
    routes = build_engines(settings, Catalog(), Credentials.from_env(KLING_KEYS))
    engine = routes[TURBO]
    assert isinstance(engine, KlingEngine) and routes[MASTER] is engine
    assert engine.models() == {TURBO, MASTER}
    assert engine.shared_limit == 3 and engine.settings.base_url == "https://api-singapore.klingai.com"


def test_build_engines_makes_a_gmi_engine_and_mixes_routes(tmp_path: Path) -> None:
    path = write(tmp_path, f'[models."{MASTER}"]\nengine = "emulator"\n')
    settings = load_settings(path, env=GMI_KEYS)
    routes = build_engines(settings, Catalog(), Credentials.from_env(GMI_KEYS))
    assert isinstance(routes[TURBO], GmiEngine) and routes[TURBO].models() == {TURBO}
    assert isinstance(routes[MASTER], EmulatorEngine)


def test_build_engines_with_the_emulator_needs_no_credentials() -> None:
    routes = build_engines(load_settings(env={}), Catalog(), Credentials())
    assert {type(e) for e in routes.values()} == {EmulatorEngine} and set(routes) == set(Catalog().ids())


def test_a_diffusers_default_engine_routes_only_the_open_models_there() -> None:
    settings = load_settings(env={"VIDQUEUE_DEFAULT_ENGINE": "diffusers"})
    routes = build_engines(settings, Catalog(), Credentials(), check_only=True)
    # Kling's models cannot run locally without a declared family: they stay on the emulator.
    assert set(routes) == {TURBO, MASTER}
    assert settings.engine_for("ltx-video", Catalog().get("ltx-video").engines) == "diffusers"


def test_describe_routes_names_the_engine_and_for_upstreams_where_and_how_many() -> None:
    env = {**KLING_KEYS, "VIDQUEUE_KLING_BASE_URL": "https://kling.example", "VIDQUEUE_KLING_CONCURRENCY": "3"}
    assert describe_routes(load_settings(env=env), Catalog())[:3] == [
        f"{TURBO} → kling (https://kling.example, at most 3 in flight)",
        f"{MASTER} → kling (https://kling.example, at most 3 in flight)",
        "wan2.1-t2v-1.3b → emulator",  # Kling keys route only Kling's models upstream
    ]
    assert describe_routes(load_settings(env={}), Catalog())[:2] == [f"{TURBO} → emulator", f"{MASTER} → emulator"]
    gmi = load_settings(env={**GMI_KEYS, "VIDQUEUE_GMI_CONCURRENCY": "9"})
    assert describe_routes(gmi, Catalog())[0] == f"{TURBO} → gmi (https://console.gmicloud.ai, at most 9 in flight)"


def test_speed_settings_are_read_per_model_and_as_defaults(tmp_path: Path) -> None:
    text = """
[engines.diffusers]
compile = false
attention_backend = "_native_cudnn"
overlap = false

[models."w"]
family = "wan2.1-t2v"
weights = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
compile = true
lora = [
  { path = "/loras/a.safetensors", scale = 0.5 },
  { path = "org/repo", weight_name = "b.safetensors", target = "both" },
]
scheduler = "UniPCMultistepScheduler"
scheduler_options = { flow_shift = 5.0, use_karras_sigmas = false }
guidance = 1.0
steps = 4
max_steps = 8
cache = { kind = "taylorseer", cache_interval = 3 }
"""
    settings = load_settings(write(tmp_path, text), env={})
    defaults, route = settings.engines.diffusers, settings.models["w"]
    assert (defaults.compile, defaults.attention_backend, defaults.overlap) == (False, "_native_cudnn", False)
    assert route.compile is True and route.attention_backend is None
    assert [(x.path, x.scale, x.weight_name, x.target) for x in route.lora] == [
        ("/loras/a.safetensors", 0.5, None, "transformer"),
        ("org/repo", 1.0, "b.safetensors", "both"),
    ]
    assert route.scheduler_options == {"flow_shift": 5.0, "use_karras_sigmas": False}
    assert (route.guidance, route.steps, route.max_steps) == (1.0, 4, 8)
    assert route.cache is not None and route.cache.kind == "taylorseer"
    assert route.cache.options() == {"cache_interval": 3}
    assert Settings.model_validate_json(settings.model_dump_json()) == settings  # as handed to worker processes


def test_the_settings_know_the_catalogs_families() -> None:
    # config.py imports nothing of the catalog (see ARCHITECTURE.md), so the family names are written in both.
    from typing import get_args

    from vidqueue.catalog import FAMILIES
    from vidqueue.config import Family

    assert get_args(Family) == FAMILIES
