"""Generate deterministic, WEPPcloud-like run directories for demos, tests and benchmarks.

A real run holds thousands of model text outputs that deflate shrinks several times, a few
``*.nodb`` JSON state files, and about a tenth of its bytes in rasters and parquet that are
compressed already. This module writes a tree with that shape from ``random.Random(seed)``
alone, so the same arguments always give byte-identical files.

Formatting every float of a 200 MB tree one at a time would take minutes, so each daily table
is assembled from pools of pre-formatted rows drawn with the seeded generator. A pool is far
larger than deflate's 32 KiB window, so rows seldom repeat within reach of the compressor and
the ratio stays close to that of real output rather than that of a copied block.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

NODB_NAMES = ("ron", "topaz", "watershed", "landuse", "soils", "climate", "wepp", "unitizer")
EMPTY_DIRS = ("export", "observed", "wepp/plots", "ash")
LANDUSES = ("Tall Grass", "Shrub", "Evergreen Forest", "Low Severity Fire")
INCOMPRESSIBLE_SHARE = 0.10
CLIMATE_SHARE = 0.05
# Output bytes split between the three hillslope files, roughly as in a WEPPcloud run.
OUTPUT_WEIGHTS = {"pass": 0.5, "wat": 0.35, "loss": 0.15}
# Files that exist once per run, whatever its size: nodb, README, watershed JSON, climate,
# channel inputs, rasters and parquet.
FIXED_FILES = len(NODB_NAMES) + 1 + 3 + 2 + 3 + 5
FILES_PER_HILLSLOPE = 7 + 1 / 8  # four inputs, three outputs, one soil per eight hillslopes

Row = Callable[[random.Random], str]


@dataclass(frozen=True, slots=True)
class GeneratedRun:
    """A generated run: its folder, regular files written and their total size in bytes."""

    path: Path
    files: int
    bytes: int


def generate_run(
    path: Path, *, seed: int = 0, target_bytes: int = 200 * 2**20, files: int = 3000
) -> GeneratedRun:
    """Write a synthetic run of about ``files`` files and ``target_bytes`` bytes into ``path``.

    ``path`` must be missing or empty, so a run is never mixed with older files. Counts include
    regular files only; the symlink and the empty folders come on top. Tiny targets still get
    one hillslope with headers and a few rows, so they overshoot rather than fail.
    """
    path.mkdir(parents=True, exist_ok=True)
    if any(path.iterdir()):
        raise FileExistsError(f"{path} is not empty")
    writer = _Writer(path, random.Random(seed))
    writer.write_run(
        hillslopes=max(1, round((files - FIXED_FILES) / FILES_PER_HILLSLOPE)),
        target_bytes=target_bytes,
    )
    return GeneratedRun(path=path, files=writer.files, bytes=writer.bytes)


class _Writer:
    """Write one run in a fixed order, so the generator's draws, and thus the bytes, repeat."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.files = 0
        self.bytes = 0
        self.runid = "-".join(rng.choice(words) for words in _RUNID_WORDS)

    def write(self, rel: str, data: bytes | str) -> None:
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        payload = data.encode("ascii") if isinstance(data, str) else data
        target.write_bytes(payload)
        self.files += 1
        self.bytes += len(payload)

    def write_run(self, hillslopes: int, target_bytes: int) -> None:
        ids = range(1, hillslopes + 1)
        mukeys = [
            str(self.rng.randrange(100_000, 3_000_000)) for _ in range(math.ceil(hillslopes / 8))
        ]
        stations = self._write_climate(int(target_bytes * CLIMATE_SHARE))
        self._write_soils_and_inputs(ids, mukeys)
        self._write_watershed(ids, mukeys)
        self._write_state(hillslopes, stations)
        self.write("README.md", _readme(self.runid, hillslopes))
        for rel in EMPTY_DIRS:
            (self.root / rel).mkdir(parents=True, exist_ok=True)
        # Realistic: WEPPcloud points a run's inputs at shared climate files.
        (self.root / "wepp/runs/climate.cli").symlink_to(f"../../climate/{stations[0]}.cli")
        opaque = int(target_bytes * INCOMPRESSIBLE_SHARE)
        self._write_outputs(ids, target_bytes - opaque - self.bytes)
        self._write_opaque(opaque, hillslopes)

    def _write_climate(self, budget: int) -> list[str]:
        stations = [
            f"{self.rng.choice('ABCDEFGHKMNOPRSTUVW')}{self.rng.randrange(10**5, 10**6)}"
            for _ in range(2)
        ]
        table = _DailyTable(
            _day_month_year, _pool(self.rng, _cli_wet, 3000, _cli_dry, 3000, dry_weight=2)
        )
        for station in stations:
            header = _cli_header(self.rng, station)
            body = table.render(self.rng, budget // len(stations) - len(header))
            self.write(f"climate/{station}.cli", header.encode("ascii") + body)
        return stations

    def _write_soils_and_inputs(self, ids: range, mukeys: Sequence[str]) -> None:
        soils = {mukey: _soil(self.rng, mukey) for mukey in mukeys}
        for mukey, text in soils.items():
            self.write(f"soils/{mukey}.sol", text)
        managements = {landuse: _management(self.rng, landuse) for landuse in LANDUSES}
        for wepp_id in ids:
            mukey = mukeys[(wepp_id - 1) // 8]
            self.write(f"wepp/runs/p{wepp_id}.run", _run_file(wepp_id))
            self.write(f"wepp/runs/p{wepp_id}.man", managements[self.rng.choice(LANDUSES)])
            self.write(f"wepp/runs/p{wepp_id}.slp", _slope(self.rng))
            self.write(f"wepp/runs/p{wepp_id}.sol", soils[mukey])
        self.write("wepp/runs/pw0.run", _run_file(0))
        self.write("wepp/runs/pw0.chn", _slope(self.rng))
        self.write("wepp/runs/pw0.str", _slope(self.rng))

    def _write_watershed(self, ids: range, mukeys: Sequence[str]) -> None:
        rng = self.rng
        hillslopes = {
            str(wepp_id): {
                "topaz_id": wepp_id * 10 + rng.choice((1, 2, 3)),
                "area": round(rng.uniform(1e3, 4e5), 1),
                "length": round(rng.uniform(30, 900), 2),
                "width": round(rng.uniform(20, 600), 2),
                "slope_scalar": round(rng.uniform(0.01, 0.6), 4),
                "aspect": round(rng.uniform(0, 360), 1),
                "centroid": [round(rng.uniform(-117, -115), 6), round(rng.uniform(45, 47), 6)],
                "mukey": mukeys[(wepp_id - 1) // 8],
            }
            for wepp_id in ids
        }
        channels = [[wepp_id * 10 + 4, round(rng.uniform(50, 3000), 2)] for wepp_id in ids[::3]]
        self.write("watershed/hillslopes.json", json.dumps(hillslopes, indent=2))
        self.write("watershed/channels.json", json.dumps(channels, indent=2))
        self.write("watershed/structure.json", json.dumps([[i, i + 1] for i in ids]))

    def _write_state(self, hillslopes: int, stations: Sequence[str]) -> None:
        rng = self.rng
        for name in NODB_NAMES:
            state: dict[str, object] = {
                "py/object": f"wepppy.nodb.core.{name}.{name.capitalize()}",
                "_runid": self.runid,
                "_config": "disturbed9002.cfg",
                "_locked": False,
                "hillslope_count": hillslopes,
                "climate_stations": list(stations),
                "monthlies": [round(rng.uniform(0, 120), 3) for _ in range(12)],
                "parameters": {f"p{i}": round(rng.gauss(0, 10), 5) for i in range(40)},
            }
            self.write(f"{name}.nodb", json.dumps(state, indent=2))

    def _write_outputs(self, ids: range, budget: int) -> None:
        rng = self.rng
        tables = {
            "pass": _DailyTable(
                _year_julian, _pool(rng, _pass_wet, 5000, _pass_dry, 2000, dry_weight=6)
            ),
            "wat": _DailyTable(
                _ofe_julian_year, _pool(rng, _wat_wet, 5000, _wat_dry, 3000, dry_weight=2)
            ),
            "loss": _DailyTable(
                _day_month_year, _pool(rng, _loss_row, 6000, _loss_row, 0, dry_weight=0)
            ),
        }
        per_hillslope = max(0, budget) // len(ids)
        for wepp_id in ids:
            for kind, weight in OUTPUT_WEIGHTS.items():
                header = _OUTPUT_HEADERS[kind].format(wepp_id=wepp_id)
                size = max(200, int(per_hillslope * weight) - len(header))
                body = tables[kind].render(rng, size)
                self.write(f"wepp/output/H{wepp_id}.{kind}.dat", header.encode("ascii") + body)

    def _write_opaque(self, budget: int, hillslopes: int) -> None:
        # Rasters and parquet are compressed already; random bytes model that honestly.
        shares = {
            "dem/dem.tif": 0.4,
            "landuse/nlcd.tif": 0.15,
            "soils/ssurgo.tif": 0.15,
            "watershed/hillslopes.parquet": 0.15,
            "wepp/output/interchange/H.pass.parquet": 0.15,
        }
        for rel, share in shares.items():
            size = max(64, int(budget * share))
            magic = b"II*\x00" if rel.endswith(".tif") else b"PAR1"
            self.write(rel, magic + self.rng.randbytes(size - 8) + magic)


def _pool(
    rng: random.Random, wet: Row, wet_n: int, dry: Row, dry_n: int, dry_weight: int
) -> list[bytes]:
    """Return rows to draw from uniformly; dry rows repeat ``dry_weight`` times to weight them."""
    wet_rows = [wet(rng).encode("ascii") for _ in range(wet_n)]
    dry_rows = [dry(rng).encode("ascii") for _ in range(dry_n)]
    return wet_rows + dry_rows * dry_weight


class _DailyTable:
    """Render daily tables: a date prefix per day and a value row drawn from a pool."""

    def __init__(self, date: Callable[[int, int, int, int], str], pool: list[bytes]) -> None:
        self.date = date
        self.pool = pool
        self.prefixes: list[bytes] = []
        self.mean_line = len(date(1, 1, 1, 1)) + sum(map(len, pool)) / len(pool)

    def render(self, rng: random.Random, size: int) -> bytes:
        """Return about ``size`` bytes of rows (at least three)."""
        lines = max(3, round(size / self.mean_line))
        # Dates are the same in every file; format them once, not once per file.
        for i in range(len(self.prefixes), lines):
            year_day = i % 365
            month, day = _MONTH_DAY[year_day]
            self.prefixes.append(self.date(i // 365 + 1, year_day + 1, month, day).encode())
        rows = rng.choices(self.pool, k=lines)
        return b"".join(chain.from_iterable(zip(self.prefixes[:lines], rows, strict=True)))


def _year_julian(year: int, julian: int, month: int, day: int) -> str:
    return f"{year:5d}{julian:5d}"


def _ofe_julian_year(year: int, julian: int, month: int, day: int) -> str:
    return f"{1:4d}{julian:5d}{year:5d}"


def _day_month_year(year: int, julian: int, month: int, day: int) -> str:
    return f"{day:3d}{month:4d}{year:6d}"


def _e(values: Sequence[float]) -> str:
    # One %-format call per row is several times faster than a format call per value.
    return ("%12.5E" * len(values)) % tuple(values)


def _f(values: Sequence[float], width: int, digits: int) -> str:
    return (f"%{width}.{digits}f" * len(values)) % tuple(values)


def _pass_wet(rng: random.Random) -> str:
    # Most rain soaks in: WEPP still logs an EVENT, with every runoff and sediment field zero.
    runoff = rng.expovariate(1 / 8) if rng.random() < 0.45 else 0.0
    sediment = [rng.expovariate(1 / 50) * runoff for _ in range(5)]
    flows = [rng.random() * runoff for _ in range(5)]
    total = sum(flows) or 1.0
    values = [
        rng.uniform(0.1, 8),
        rng.uniform(0.01, 4) if runoff else 0.0,
        rng.random() if runoff else 0.0,
        runoff / 1000,
        runoff * rng.uniform(50, 900),
        0.0,
        0.0,
        0.0,
        0.0,
        rng.uniform(0, 2e-5) * runoff,
        rng.expovariate(1 / 3) * runoff,
        rng.expovariate(1 / 2) * runoff,
        *sediment,
    ]
    return "  EVENT   " + _e(values) + _e([f / total for f in flows]) + _e(_groundwater(rng)) + "\n"


def _pass_dry(rng: random.Random) -> str:
    return "  NO EVENT" + _e(_groundwater(rng)) + "\n"


def _groundwater(rng: random.Random) -> list[float]:
    return [0.0 if rng.random() < 0.6 else rng.expovariate(1 / 3), rng.expovariate(1 / 0.5)]


def _wat_wet(rng: random.Random) -> str:
    rain = rng.expovariate(1 / 9)
    runoff = rain * rng.uniform(0, 0.4)
    values = [
        rain,
        rain * rng.uniform(0.6, 1),
        runoff,
        rng.uniform(0, 3),
        rng.uniform(0, 1.5),
        rng.uniform(0, 2),
        rng.uniform(0, rain / 3),
        0.0,
        0.0,
        rng.uniform(0, 1.2),
        rng.uniform(180, 420),
        0.0,
        rng.choice((0.0, 0.0, rng.uniform(0, 60))),
        runoff,
        0.0,
        0.0,
    ]
    return _f(values, 9, 2) + "\n"


def _wat_dry(rng: random.Random) -> str:
    snow = rng.uniform(0, 80) if rng.random() < 0.2 else 0.0
    values = [
        0.0,
        0.0,
        0.0,
        rng.uniform(0, 3),
        rng.uniform(0, 1),
        0.0,
        0.0,
        0.0,
        0.0,
        rng.uniform(0, 0.3),
        rng.uniform(150, 400),
        0.0,
        snow,
        0.0,
        0.0,
        0.0,
    ]
    return _f(values, 9, 2) + "\n"


def _loss_row(rng: random.Random) -> str:
    rain = rng.expovariate(1 / 15)
    deposits = rng.random() < 0.4
    values = [
        rain,
        rain * rng.uniform(0, 0.5),
        rng.expovariate(2),
        rng.expovariate(1),
        rng.expovariate(0.3),
        rng.uniform(0, 400),
        rng.expovariate(1) if deposits else 0.0,
        rng.expovariate(0.2) if deposits else 0.0,
        rng.uniform(0, 400) if deposits else 0.0,
        rng.expovariate(1 / 500),
        rng.uniform(1, 12),
    ]
    return _f(values, 10, 2) + "\n"


def _cli_wet(rng: random.Random) -> str:
    rain = rng.expovariate(1 / 10)
    return _f([rain, rng.uniform(0.5, 12), rng.random(), rng.uniform(1, 8)], 7, 2) + _cli_weather(
        rng
    )


def _cli_dry(rng: random.Random) -> str:
    return _f([0.0, 0.0, 0.0, 0.0], 7, 2) + _cli_weather(rng)


def _cli_weather(rng: random.Random) -> str:
    tmax = rng.uniform(-10, 38)
    values = [
        tmax,
        tmax - rng.uniform(5, 20),
        rng.uniform(50, 800),
        rng.uniform(0, 12),
        rng.uniform(0, 360),
        tmax - rng.uniform(8, 25),
    ]
    return _f(values, 7, 1) + "\n"


def _cli_header(rng: random.Random, station: str) -> str:
    lat, lon = rng.uniform(40, 48), rng.uniform(-120, -110)
    return (
        "5.32300\n  1  0  0\n"
        f"   Station: {station} CLIGEN VER. 5.32300 -r: 0 -I: 2\n"
        " Latitude Longitude Elevation (m) Obs. Years   Beginning year  Years simulated\n"
        f"{lat:10.2f}{lon:10.2f}{rng.uniform(300, 2500):12.0f}{40:12d}{1:16d}{100:16d}\n"
        " da mo year  prcp  dur   tp     ip  tmax  tmin  rad  w-vel  w-dir  tdew\n"
        "             (mm)  (h)               (C)   (C) (l/d) (m/s)(Deg)   (C)\n"
    )


def _soil(rng: random.Random, mukey: str) -> str:
    layers = rng.randint(2, 5)
    lines = [
        "7778",
        f"# WEPPcloud soil for mukey {mukey}",
        "Any comments:",
        "1 1",
        f"'{mukey}' 'loam' {layers} {rng.uniform(0.05, 0.3):.4f} {rng.uniform(0.4, 0.75):.4f}"
        f" {rng.uniform(1e6, 9e6):.2f} {rng.uniform(0.001, 0.02):.6f}"
        f" {rng.uniform(0.5, 6):.4f} {rng.uniform(1, 40):.4f}",
    ]
    depth = 0.0
    for _ in range(layers):
        depth += rng.uniform(50, 400)
        values = [depth, *(rng.uniform(0, 100) for _ in range(9))]
        lines.append("   " + " ".join(f"{v:.2f}" for v in values))
    lines.append(f"1 10000.0 {rng.uniform(0.001, 1):.5f}")
    return "\n".join(lines) + "\n"


def _management(rng: random.Random, landuse: str) -> str:
    lines = ["98.4", f"# {landuse} management written by WEPPcloud", "1  # number of OFEs", "100"]
    for section in ("Plant", "Operation", "Initial Conditions", "Surface Effects", "Yearly"):
        lines.append(f"#\n# {section} Section\n#")
        for _ in range(rng.randint(8, 20)):
            lines.append(" ".join(f"{rng.uniform(0, 100):.5f}" for _ in range(rng.randint(1, 6))))
    lines.extend(f"{year:4d}  # year {year}\n   1  # plant" for year in range(1, 101))
    return "\n".join(lines) + "\n"


def _slope(rng: random.Random) -> str:
    points = rng.randint(4, 12)
    profile = ", ".join(
        f"{i / (points - 1):.3f}, {rng.uniform(0.01, 0.6):.4f}" for i in range(points)
    )
    return (
        f"97.5\n1\n{rng.uniform(0, 360):.1f} {rng.uniform(20, 600):.2f}\n"
        f"{points} {rng.uniform(30, 900):.2f}\n{profile}\n"
    )


def _run_file(wepp_id: int) -> str:
    name = f"pw{wepp_id}" if wepp_id == 0 else f"p{wepp_id}"
    answers = [
        "m",
        "y",
        "1",
        "1",
        "y",
        f"../output/H{wepp_id}.pass.dat",
        "1",
        "n",
        f"../output/H{wepp_id}.loss.dat",
        "n",
        "y",
        f"../output/H{wepp_id}.wat.dat",
        "n",
        "n",
        "n",
        "n",
        "n",
        "n",
        f"{name}.man",
        f"{name}.slp",
        "climate.cli",
        f"{name}.sol",
        "0",
        "100",
        "0",
    ]
    return "\n".join(answers) + "\n"


def _readme(runid: str, hillslopes: int) -> str:
    return (
        f"# {runid}\n\n"
        "Synthetic WEPPcloud-like run written by `runarchive.demo.generate_run`.\n"
        f"It models a watershed of {hillslopes} hillslopes; none of its numbers are real.\n"
    )


_OUTPUT_HEADERS = {
    "pass": " WEPP hillslope pass file for H{wepp_id}\n 2012.8\n  BINARY? N\n"
    " year  day  event    dur tcs oalpha runoff runvol sbrunf sbrunv drainq drrunv peakro"
    " tdet tdep sedcon(1..5) frcflw(1..5) gwbfv gwdsv\n",
    "wat": " Hillslope water balance for H{wepp_id}\n"
    " OFE    J    Y        P       RM        Q       Ep       Es       Er       Dp  UpStrmQ"
    "   SubRIn   latqcc  TotSoil   frozwt  SnowWat     QOFE     Tile      Irr\n"
    " ---------------------------------------------------------------------------------\n",
    "loss": " Event by event soil loss for H{wepp_id}\n"
    " da  mo  year    Precip    Runoff    IR-det    Av-det    Mx-det     Point    Av-dep"
    "   Max-dep     Point  Sed.Del        ER\n",
}

# The simulation calendar has no leap days, as CLIGEN's.
_MONTH_DAY = [
    (m + 1, d + 1)
    for m, n in enumerate((31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31))
    for d in range(n)
]

_RUNID_WORDS = (
    ("rlew", "mdobre", "srivas", "lt", "ak"),
    ("bright", "quiet", "confident", "sunny", "humble", "amber"),
    ("abacus", "falcon", "meadow", "granite", "willow", "harbor"),
)
