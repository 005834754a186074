"""Property-based fuzzing of every file bmsd reads: always a clear error, never a traceback.

Each property mutates a real shipped file (or writes random content) and loads it the way the
daemon or the CLI does. The only acceptable outcomes are a good load or a ``BmsdError`` whose
message names the file; any other exception escaping is a bug (a traceback for the user).
State files must never raise at all: a bad one is reported and the daemon starts safe.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tests_support import sealed_state_file

from bmsd.balancing.coordinator import STATE_KIND as BALANCING_KIND
from bmsd.balancing.coordinator import STATE_VERSION as BALANCING_VERSION
from bmsd.balancing.coordinator import Balancer
from bmsd.balancing.settings import BalancingConfig
from bmsd.config import load_config
from bmsd.errors import BmsdError, ConfigError
from bmsd.estimation import EstimationConfig, Estimator
from bmsd.estimation.trace import read_trace
from bmsd.model.cell import CellModel
from bmsd.model.topology import Topology
from bmsd.protection.faults import initial_state, restore_latched
from bmsd.protection.persistence import KIND as LATCHED_KIND
from bmsd.protection.persistence import VERSION as LATCHED_VERSION
from bmsd.protection.persistence import LatchedFaultStore
from bmsd.protection.table import FaultSpec, LevelSpec
from bmsd.publish.inverter.profile import load_profile
from bmsd.system.statefile import write_state

ROOT = Path(__file__).resolve().parents[2]
SIM_CONFIG = ROOT / "etc" / "sim.toml"
CELL_FILES = sorted((ROOT / "etc" / "cells").glob("*.toml"))
# BMSD_FUZZ_EXAMPLES scales a campaign run (docs/reliability.md); the suite's default is quick.
FUZZ_EXAMPLES = int(os.environ.get("BMSD_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Literals in TOML syntax, right and wrong types, edge values, and broken syntax.
toml_literals = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda x: (
            "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf") if math.isinf(x) else repr(x)
        )
    ),
    st.text(max_size=20).map(json.dumps),
    st.sampled_from(["true", "false", "[]", "{}", "[1, 'a']", "{ a = 1 }", "0", "-1", "1e308"]),
    st.sampled_from(["5e-324", "-5e-324", "1e300", "-1e300", "2.2250738585072014e-308"]),
    st.sampled_from(["", "=", "[", "'unterminated", "0x", "1979-05-27", "[[x]]", "\x00"]),
    st.lists(st.floats(allow_nan=False, width=32), max_size=6).map(
        lambda xs: "[" + ", ".join(repr(float(x)) for x in xs) + "]"
    ),
    # Hostile values an adversarial review found crashing the loaders: integers beyond 64 bits
    # and beyond a float (OverflowError), arrays and inline tables nested hundreds deep
    # (RecursionError), and strings too long for a file name (ENAMETOOLONG).
    st.one_of(
        st.integers(min_value=2**63, max_value=10**500), st.integers(max_value=-(2**63) - 1)
    ).map(str),
    st.integers(min_value=30, max_value=600).map(lambda n: "[" * n + "1" + "]" * n),
    st.integers(min_value=30, max_value=600).map(lambda n: "{ a = " * n + "1" + " }" * n),
    st.integers(min_value=255, max_value=6000).map(lambda n: json.dumps("a" * n)),
)

# Whole lines inserted as garbage: random text, or table headers nested far too deep.
garbage_lines = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=30, max_value=3000).map(lambda n: "[" + ".".join(["t"] * n) + "]"),
    st.integers(min_value=30, max_value=3000).map(lambda n: ".".join(["t"] * n) + " = 1"),
)


def _mutate(text: str, data: st.DataObject) -> str:
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="mutations")):
        index = data.draw(st.integers(min_value=0, max_value=len(lines) - 1), label="line")
        line = lines[index]
        action = data.draw(
            st.sampled_from(["value", "delete", "duplicate", "garbage", "key"]), label="action"
        )
        if action == "value" and "=" in line:
            key = line.split("=", 1)[0]
            lines[index] = f"{key}= {data.draw(toml_literals, label='literal')}"
        elif action == "delete":
            del lines[index]
            if not lines:
                lines = [""]
        elif action == "duplicate":
            lines.insert(index, line)
        elif action == "key" and "=" in line:
            key = data.draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), label="key")
            lines[index] = f"{key} = {line.split('=', 1)[1]}"
        else:
            lines.insert(index, data.draw(garbage_lines, label="garbage"))
    return "\n".join(lines) + "\n"


def _names_the_file(error: BmsdError, path: Path) -> bool:
    if isinstance(error, ConfigError):
        return all(issue.file for issue in error.issues) and any(
            path.name in issue.file for issue in error.issues
        )
    return path.name in str(error)


DATA_FOLDERS = ("cells", "limits", "protection", "protocols", "inverters")


def _link_data_folders(directory: Path, *, except_folder: str = "") -> None:
    """Link the shipped data folders beside a config, so its relative paths resolve."""
    for folder in DATA_FOLDERS:
        if folder != except_folder:
            (directory / folder).symlink_to(ROOT / "etc" / folder)


def test_the_unmutated_config_loads_in_the_fuzzing_layout() -> None:
    # Guards the properties below: were the layout incomplete, every example would be
    # rejected for a missing file and the fuzzing would test nothing.
    with tempfile.TemporaryDirectory() as tmp:
        _link_data_folders(Path(tmp))
        path = Path(tmp) / "config.toml"
        path.write_text(SIM_CONFIG.read_text())
        assert load_config(path).inverters, "the shipped first-run config has an inverter"


@FUZZ
@given(data=st.data())
def test_a_mutated_config_loads_or_names_its_problem(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # Beside the shipped data files, so the relative paths (cells, defaults) resolve.
        _link_data_folders(Path(tmp))
        path = Path(tmp) / "fuzzed.toml"
        path.write_text(
            _mutate(SIM_CONFIG.read_text(), data), encoding="utf-8", errors="surrogatepass"
        )
        try:
            load_config(path)
        except BmsdError as error:
            event("rejected")
            assert str(error).strip(), "an error with no message"
            if isinstance(error, ConfigError):
                assert all(issue.file and issue.reason for issue in error.issues)
        else:
            event("loaded")


override_keys = st.sampled_from(
    [
        "pack.modules",
        "pack.cells_per_module",
        "control.tick_s",
        "can.slaves.interface",
        "can.slaves.channel",
        "acquisition.module_timeout_s",
        "protection.faults.cell_voltage_high.fatal.threshold",
        "protection.faults.cell_voltage_high.fatal.debounce_samples",
        "protection.faults.cell_voltage_high.enabled",
        "limits.charge_current_a",
        "estimation.state_save_interval_s",
        "sim.load.kind",
        "state.directory",
        "no.such.key",
        "pack",
        "",
    ]
)


@FUZZ
@given(key=override_keys, value=toml_literals)
def test_a_bad_override_names_key_and_reason(key: str, value: str) -> None:
    try:
        load_config(SIM_CONFIG, (f"{key}={value}",))
    except BmsdError as error:
        assert str(error).strip()
        if isinstance(error, ConfigError):
            assert all(issue.reason for issue in error.issues)


@FUZZ
@given(data=st.data(), source=st.sampled_from(CELL_FILES))
def test_a_mutated_cell_file_loads_or_names_its_problem(data: st.DataObject, source: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / source.name
        path.write_text(_mutate(source.read_text(), data), encoding="utf-8", errors="surrogatepass")
        try:
            model = CellModel.load(path)
        except BmsdError as error:
            assert _names_the_file(error, path), str(error)
        else:
            # A file that loads gives a usable model: finite voltages over the whole window.
            soc = np.linspace(0.0, 1.0, 11)
            assert np.all(np.isfinite(model.ocv_v(soc, np.full(11, 25.0))))


csv_cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers().map(str),
    st.sampled_from(["", " ", "x", "1e999", "-0", "nan", '"', "1,2"]),
)
csv_headers = st.one_of(
    st.just("time_s,current_a,voltage_v,temp_c"),
    st.just("time_s,current_a,voltage_v"),
    st.permutations(["time_s", "current_a", "voltage_v", "temp_c"]).map(",".join),
    st.lists(st.sampled_from(["time_s", "current_a", "voltage_v", "temp_c", "x", ""]),
             max_size=5).map(",".join),
)  # fmt: skip


@FUZZ
@given(
    header=csv_headers,
    rows=st.lists(st.lists(csv_cells, min_size=0, max_size=5), max_size=30),
)
def test_a_random_trace_reads_or_names_its_problem(header: str, rows: list[list[str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.csv"
        path.write_text(header + "\n" + "\n".join(",".join(row) for row in rows) + "\n")
        try:
            trace = read_trace(path)
        except BmsdError as error:
            assert _names_the_file(error, path), str(error)
        else:
            assert len(trace) > 0
            assert np.all(np.isfinite(trace.time_s))
            assert np.all(np.diff(trace.time_s) > 0), "time must increase"


@FUZZ
@given(content=st.binary(max_size=400))
def test_random_bytes_as_a_trace_never_raise_anything_but_a_clear_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.csv"
        path.write_bytes(content)
        try:
            read_trace(path)
        except BmsdError as error:
            assert _names_the_file(error, path), str(error)


def _json_like() -> st.SearchStrategy[object]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )


def _corrupted_copies(valid: bytes) -> st.SearchStrategy[bytes]:
    """A real state file truncated, zeroed, bit-flipped, or replaced by random JSON/bytes."""
    return st.one_of(
        st.integers(min_value=0, max_value=len(valid)).map(lambda n: valid[:n]),
        st.integers(min_value=0, max_value=len(valid)).map(lambda n: b"\x00" * n),
        st.tuples(
            st.integers(min_value=0, max_value=len(valid) - 1),
            st.integers(min_value=1, max_value=255),
        ).map(lambda t: valid[: t[0]] + bytes([valid[t[0]] ^ t[1]]) + valid[t[0] + 1 :]),
        _json_like().map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=300),
    )


CELL = CellModel.load(ROOT / "etc" / "cells" / "lfp_280ah.toml")


def _valid_estimates_file() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        estimator = Estimator(CELL, 4, 1, EstimationConfig())
        estimator.set_soc(np.array([0.3, 0.4, 0.5, 0.6]), 0.02)
        path = Path(tmp) / "estimates.json"
        estimator.save(path)
        return path.read_bytes()


VALID_ESTIMATES = _valid_estimates_file()


@FUZZ
@given(content=_corrupted_copies(VALID_ESTIMATES))
def test_a_damaged_estimates_file_is_reported_and_the_estimator_left_untouched(
    content: bytes,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "estimates.json"
        path.write_bytes(content)
        estimator = Estimator(CELL, 4, 1, EstimationConfig())
        before = estimator.soc.copy()
        reason = estimator.load(path)
        if content == VALID_ESTIMATES:
            assert reason == ""
        elif reason:
            # Not used: nothing half-loaded.
            np.testing.assert_array_equal(estimator.soc, before)
        else:
            # Used (a flip in a value that still validates): every value is a real SOC.
            assert np.all((estimator.soc >= 0.0) & (estimator.soc <= 1.0))


def _valid_latched_file() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "latched.json"
        latched = {"cell_voltage_high.fatal": {"set_count": 1, "value_at_set": 3.71}}
        write_state(path, LATCHED_KIND, LATCHED_VERSION, {"latched": latched})
        return path.read_bytes()


VALID_LATCHED = _valid_latched_file()
FUZZ_TABLE = {
    "cell_voltage_high": FaultSpec(quantity="cell_voltage_max_v", fatal=LevelSpec(threshold=3.65))
}


@FUZZ
@given(content=_corrupted_copies(VALID_LATCHED))
def test_a_damaged_latched_fault_file_is_reported_never_raised(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = LatchedFaultStore(Path(tmp))
        store.path.write_bytes(content)
        latched, problem = store.load()
        assert isinstance(latched, dict)
        if content == VALID_LATCHED:
            assert (set(latched), problem) == ({"cell_voltage_high.fatal"}, "")
        _assert_never_silently_unlatched(latched, problem)


def _assert_never_silently_unlatched(
    latched: dict[str, dict[str, float | int | None]], problem: str
) -> None:
    """The latched fault is restored, or the file is reported damaged (the daemon then starts
    in FAULT, latched_faults_lost); whatever is restored is a well-formed record."""
    assert "cell_voltage_high.fatal" in latched or problem, "a latched fault silently lost"
    for record in latched.values():
        assert set(record) == {"set_count", "value_at_set"}
        count, value = record["set_count"], record["value_at_set"]
        assert type(count) is int and count >= 1
        assert value is None or (type(value) is float and math.isfinite(value))


# Data files a config points to: each is mutated in a private copy of its folder, then loaded
# the way the daemon loads it (through the config), so a bad table or profile is reported
# with its own file name and never as a traceback.
DATA_FILES = [
    path.relative_to(ROOT / "etc")
    for folder in ("limits", "protection", "protocols", "inverters")
    for path in sorted((ROOT / "etc" / folder).glob("*.toml"))
    if path.name != "TEMPLATE.toml"
]


@FUZZ
@given(data=st.data(), relative=st.sampled_from(DATA_FILES))
def test_a_mutated_data_file_loads_or_names_its_problem(
    data: st.DataObject, relative: Path
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "etc"
        base.mkdir()
        folder = relative.parts[0]
        _link_data_folders(base, except_folder=folder)
        shutil.copytree(ROOT / "etc" / folder, base / folder)
        # The copied profiles and protocols name their DBCs relative to the shipped layout.
        (Path(tmp) / "dbc").symlink_to(ROOT / "dbc")
        target = base / relative
        target.write_text(
            _mutate(target.read_text(), data), encoding="utf-8", errors="surrogatepass"
        )
        config = base / "config.toml"
        config.write_text(_config_using(relative))
        try:
            load_config(config)
        except BmsdError as error:
            event(f"rejected {relative}")
            assert _names_the_file(error, target) or _names_the_file(error, config), str(error)
            if isinstance(error, ConfigError):
                assert all(issue.file and issue.reason for issue in error.issues)
        else:
            event(f"loaded {relative}")


def _config_using(relative: Path) -> str:
    """The first-run config, switched to the NMC tables or to the inverter profile fuzzed."""
    text = SIM_CONFIG.read_text()
    if relative.parts[0] == "inverters":
        text = text.replace("inverters/pylontech_hv.toml", str(relative))
    if "nmc" in relative.name:
        text = text.replace('"LFP"', '"NMC"').replace("lfp_280ah", "nmc_100ah")
        text = text.replace("protection/lfp.toml", "protection/nmc.toml")
        text = text.replace("limits/lfp.toml", "limits/nmc.toml")
    return text


def test_every_fuzzed_data_file_is_loaded_by_its_config() -> None:
    # Without this the NMC tables would be mutated and never read, and pass for nothing.
    with tempfile.TemporaryDirectory() as tmp:
        _link_data_folders(Path(tmp))
        for relative in DATA_FILES:
            path = Path(tmp) / "config.toml"
            path.write_text(_config_using(relative))
            config = load_config(path)
            used = {*config.protection.defaults, *config.limits.defaults}
            used |= {config.acquisition.protocol}
            used |= {inverter.profile for inverter in config.inverters.values()}
            assert str(relative) in used, relative


PROFILES = sorted((ROOT / "etc" / "inverters").glob("*.toml"))


@FUZZ
@given(data=st.data(), source=st.sampled_from(PROFILES))
def test_a_mutated_inverter_profile_loads_or_names_its_problem(
    data: st.DataObject, source: Path
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "etc" / "inverters"
        folder.mkdir(parents=True)
        (Path(tmp) / "dbc").symlink_to(ROOT / "dbc")
        path = folder / source.name
        path.write_text(_mutate(source.read_text(), data), encoding="utf-8", errors="surrogatepass")
        try:
            profile = load_profile(path)
        except BmsdError as error:
            assert _names_the_file(error, path), str(error)
        else:
            # A profile that loads has frames to send.
            assert profile.spec.frames


@FUZZ
@given(
    data=st.data(),
    dbc=st.sampled_from(sorted((ROOT / "dbc").glob("inverter_*.dbc"))),
)
def test_a_mutated_dbc_is_reported_by_the_profile_that_uses_it(
    data: st.DataObject, dbc: Path
) -> None:
    profile = next(p for p in PROFILES if f"/{dbc.name}" in p.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "etc" / "inverters").mkdir(parents=True)
        (Path(tmp) / "dbc").mkdir()
        (Path(tmp) / "dbc" / dbc.name).write_text(
            _mutate(dbc.read_text(), data), encoding="utf-8", errors="surrogatepass"
        )
        path = Path(tmp) / "etc" / "inverters" / profile.name
        path.write_text(profile.read_text())
        try:
            load_profile(path)
        except BmsdError as error:
            assert _names_the_file(error, path), str(error)


@FUZZ
@given(content=st.binary(max_size=400), source=st.sampled_from(PROFILES))
def test_random_bytes_as_a_profile_give_a_clear_error(content: bytes, source: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / source.name
        path.write_bytes(content)
        try:
            load_profile(path)
        except BmsdError as error:
            assert _names_the_file(error, path), str(error)


BALANCING_TOPOLOGY = Topology(
    strings=1,
    modules_per_string=2,
    cells_per_module=4,
    temps_per_module=1,
    cells_in_parallel=1,
    module_node_ids=(1, 2),
)


def _balancer() -> Balancer:
    return Balancer(BalancingConfig(strategy="soc"), BALANCING_TOPOLOGY, 1.0)


def _valid_balancing_file() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        balancer = _balancer()
        state = balancer.export_state()
        state["bled_ah"] = [0.5, 0.0, 1.25, 0.0, 0.0, 2.0, 0.0, 0.1]
        path = Path(tmp) / "balancing.json"
        write_state(path, BALANCING_KIND, BALANCING_VERSION, state)
        return path.read_bytes()


VALID_BALANCING = _valid_balancing_file()


@FUZZ
@given(content=_corrupted_copies(VALID_BALANCING))
def test_a_damaged_balancing_file_is_reported_never_raised(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "balancing.json"
        path.write_bytes(content)
        balancer = _balancer()
        reason = balancer.load(path)
        bled = np.asarray(balancer.export_state()["bled_ah"])
        if content == VALID_BALANCING:
            assert reason == ""
            assert bled.sum() == 3.85
        elif reason:
            assert not bled.any(), "nothing half-loaded from a damaged file"
        else:
            assert np.all(np.isfinite(bled) & (bled >= 0.0))


# -- Sealed payloads: a correct envelope and checksum around wrong-shape or extreme content --
#
# A checksum proves the bytes are the ones written, not that the writer was sane (an older
# version, a bug, a hand edit). Each property takes a real payload, replaces one to three of
# its values (or the whole payload) with JSON text no writer of ours produces, seals it with
# a valid envelope and loads it: never a traceback, damage reported, nothing unsafe used.

_DEEP = [50, 5000, 100_000]
extreme_json = st.one_of(
    st.sampled_from(
        [
            "null",
            "true",
            '"x"',
            '""',
            '"\\ud800"',  # a lone surrogate as a JSON escape
            '"\ud800"',  # ... and as a raw character of the payload text
            "[]",
            "{}",
            "Infinity",
            "-Infinity",
            "NaN",
            "1e999",
            "1e300",
            "-1e300",
            "1e-300",
            "0",
            "-1",
            "1" * 401,  # beyond any float
            "9" * 5000,  # beyond Python's int-digits limit
            "[1e999, 0.5]",
            "[" + "1" * 401 + "]",
            '{"set_count": 1, "value_at_set": null}',
        ]
    ),
    st.sampled_from(_DEEP).map(lambda depth: "[" * depth + "]" * depth),
    _json_like().map(lambda value: json.dumps(value)),
)


def _paths(value: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every place in a JSON document a value could be replaced."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value[:3]):
            found += _paths(inner, (*prefix, index))
    return found


def _replace(document: object, path: tuple[str | int, ...], marker: str) -> object:
    if not path:
        return marker
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        return {k: _replace(v, rest, marker) if k == head else v for k, v in document.items()}
    if not isinstance(document, list):
        return document  # an outer value was replaced already
    return [_replace(v, rest, marker) if i == head else v for i, v in enumerate(document)]


def _sealed_variants(valid: bytes, kind: str) -> st.SearchStrategy[bytes]:
    payload = json.loads(json.loads(valid)["payload"])
    paths = _paths(payload)

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        if draw(st.integers(min_value=0, max_value=9), label="whole") == 0:
            text = draw(extreme_json, label="payload")  # the whole payload of the wrong shape
        else:
            chosen = draw(
                st.lists(st.sampled_from(paths), min_size=1, max_size=3, unique=True),
                label="paths",
            )
            document: object = payload
            fragments = {}
            for index, path in enumerate(chosen):
                marker = f"@@{index}@@"
                document = _replace(document, path, marker)
                fragments[json.dumps(marker)] = draw(extreme_json, label=f"value {path}")
            text = json.dumps(document)
            for marker_json, fragment in fragments.items():
                text = text.replace(marker_json, fragment)
        event(f"{kind}: sealed")
        # Written now: the estimates refuse a file older than max_state_age_s.
        return sealed_state_file(text, kind, written_at=repr(time.time()))

    return build()


@FUZZ
@given(content=_sealed_variants(VALID_LATCHED, LATCHED_KIND))
def test_a_sealed_latched_file_with_odd_content_is_damaged_never_unlatched(
    content: bytes,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = LatchedFaultStore(Path(tmp))
        store.path.write_bytes(content)
        latched, problem = store.load()
        if not problem:
            # Accepted: a well-formed table, every entry restored (a sealed file may say that
            # nothing is latched; it may not lose an entry it has).
            saved = json.loads(json.loads(content)["payload"])["latched"]
            assert set(latched) == set(saved)
        _assert_never_silently_unlatched(latched, problem or "accepted as written")
        if problem:
            assert store.path.with_name(store.path.name + ".bad").exists()
            # A restart before the first write finds it damaged again (starts in FAULT).
            assert LatchedFaultStore(Path(tmp)).load()[1]
        # What start-up does with it: restored levels latched, and never a traceback.
        state = restore_latched(initial_state(FUZZ_TABLE), latched, 1.0, FUZZ_TABLE)
        assert {level.key for level in state.latched()} == set(latched) & {
            "cell_voltage_high.fatal"
        }


@FUZZ
@given(content=_sealed_variants(VALID_ESTIMATES, "estimates"))
def test_a_sealed_estimates_file_with_odd_content_is_refused_or_sane(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "estimates.json"
        path.write_bytes(content)
        estimator = Estimator(CELL, 4, 1, EstimationConfig())
        before = estimator.export_state()
        reason = estimator.load(path)
        if reason:
            assert estimator.export_state() == before, "nothing half-loaded"
            assert not path.exists() or path.with_name("estimates.json.bad").exists()
        else:
            # Used: every number is one the estimator could have made, and saving works.
            json.dumps(estimator.export_state(), allow_nan=False)
            assert np.all((estimator.soc >= 0.0) & (estimator.soc <= 1.0))
            assert np.all(np.isfinite(estimator.soc_std) & (estimator.soc_std > 0.0))


@FUZZ
@given(content=_sealed_variants(VALID_BALANCING, BALANCING_KIND))
def test_a_sealed_balancing_file_with_odd_content_is_refused_or_sane(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "balancing.json"
        path.write_bytes(content)
        balancer = _balancer()
        reason = balancer.load(path)
        state = balancer.export_state()
        bled = np.asarray(state["bled_ah"])
        if reason:
            assert not bled.any(), "nothing half-loaded"
        else:
            assert np.all(np.isfinite(bled) & (bled >= 0.0))
            json.dumps(state, allow_nan=False)
