"""A real Prometheus server on loopback for the tests, and what the monitoring tests check with.

Debian's ``prometheus`` package (``scripts/test-deps.sh``) brings ``/usr/bin/prometheus`` and
``promtool`` but the tests never use its system service: :class:`PrometheusServer` runs its own
process with a generated configuration on ``127.0.0.1:<free port>``, its storage in the work dir,
and ``--web.enable-lifecycle`` so that a session-wide server can be pointed at each test's
services with :meth:`PrometheusServer.configure` (the config is rewritten, then ``/-/reload``).

The rest is what the monitoring tests compare the deployed rules and dashboard with:

* :func:`code_metrics`: every metric the project's code defines (name, type, labels), read from
  the source with ``ast`` (``Counter``/``Gauge``/``Histogram``/``Summary`` and the custom
  collectors' ``*MetricFamily``), as the samples a scrape shows (``_total``, ``_bucket``, ...);
* :data:`TRITON_METRICS` and :data:`PROMETHEUS_METRICS`: the series Triton and Prometheus itself
  export that the rules and the dashboard use (the integration test checks the Triton ones
  against a live scrape);
* :func:`promql_references`: the metric names, matcher labels and grouping labels of a PromQL
  expression (a scanner, not a full parser: enough for the project's own expressions);
* :func:`rule_expressions` and :func:`rule_names`: the ``expr:``/``record:``/``alert:`` values of
  a rule file (a reader of the subset of YAML the rule files use: one key per line, values plain,
  quoted or ``|``/``>`` block scalars; the virtualenv has no YAML library).
"""

from __future__ import annotations

import ast
import json
import logging
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from openlfr import paths
from openlfr.subprocesses import ChildProcess, free_port

logger = logging.getLogger(__name__)

#: The deployed monitoring files (mounted by docker-compose and the k8s manifests).
DEPLOY_DIR = paths.REPO_ROOT / "deploy"
PROMETHEUS_CONFIG = DEPLOY_DIR / "prometheus" / "prometheus.yml"
RULES_DIR = DEPLOY_DIR / "prometheus" / "rules"
RULE_TESTS_DIR = DEPLOY_DIR / "prometheus" / "tests"
DASHBOARDS_DIR = DEPLOY_DIR / "grafana" / "dashboards"

#: Where the project's metrics are defined (the shared package and the services).
CODE_ROOTS = (paths.REPO_ROOT / "libs" / "openlfr", paths.REPO_ROOT / "services")

#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})

MetricType = Literal["counter", "gauge", "histogram", "summary"]


class PrometheusError(RuntimeError):
    """The Prometheus server could not be found, started, configured or queried."""


def find_binary(name: Literal["prometheus", "promtool"]) -> Path | None:
    """``/usr/bin/prometheus`` or ``promtool`` (Debian's package), else whatever ``PATH`` has."""
    debian = Path("/usr/bin") / name
    if debian.is_file():
        return debian
    found = shutil.which(name)
    return Path(found) if found else None


# -- the server ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScrapeJob:
    """One scrape job: its name (the ``job`` label) and ``host:port`` targets."""

    job: str
    targets: tuple[str, ...]
    metrics_path: str = "/metrics"

    def __post_init__(self) -> None:
        if not self.job:
            raise ValueError("ScrapeJob.job is empty")
        if not self.targets:
            raise ValueError(f"ScrapeJob {self.job!r} has no targets")


class PrometheusServer(ChildProcess):
    """A ``prometheus`` subprocess with a generated config, listening on loopback.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with PrometheusServer(work_dir=tmp, jobs=[ScrapeJob("detect", ("127.0.0.1:8080",))]) as p:
            p.wait_for("up == 1")
    """

    not_started_error = PrometheusError
    what = "Prometheus server"

    def __init__(
        self,
        *,
        work_dir: Path,
        jobs: Sequence[ScrapeJob] = (),
        rule_files: Sequence[Path] = (),
        scrape_interval_s: float = 1.0,
        evaluation_interval_s: float = 1.0,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: Path | None = None,
        startup_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        """Describe the server; nothing starts until :meth:`start`.

        Args:
            work_dir: Holds ``prometheus.yml``, ``prometheus.log`` and the TSDB (``data/``).
            jobs: What to scrape (changeable later with :meth:`configure`).
            rule_files: Rule files (or globs) to load, absolute.
            scrape_interval_s: Scrape interval of every job (1 s suits a test).
            evaluation_interval_s: How often the rules are evaluated.
            host: Address the web server binds to.
            port: Web port; a free one is chosen at start if not given.
            binary: The ``prometheus`` executable; Debian's if not given.
            startup_timeout_s: How long :meth:`start` waits for ``/-/ready``.
            stop_timeout_s: How long :meth:`stop` waits after SIGTERM before it kills.
        """
        if scrape_interval_s <= 0 or evaluation_interval_s <= 0:
            raise ValueError(
                f"scrape_interval_s={scrape_interval_s}, evaluation_interval_s="
                f"{evaluation_interval_s}, expected > 0"
            )
        if startup_timeout_s <= 0:
            raise ValueError(f"startup_timeout_s={startup_timeout_s}, expected > 0")
        self.work_dir = Path(work_dir).resolve()
        self.jobs = tuple(jobs)
        self.rule_files = tuple(Path(p) for p in rule_files)
        self.scrape_interval_s = scrape_interval_s
        self.evaluation_interval_s = evaluation_interval_s
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.binary = binary
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        """The server's log (stderr and stdout)."""
        return self.work_dir / "prometheus.log"

    @property
    def config_file(self) -> Path:
        """The generated configuration."""
        return self.work_dir / "prometheus.yml"

    @property
    def port(self) -> int:
        """The web port (known once started)."""
        if self._port is None:
            raise PrometheusError("the Prometheus server has not been started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the web server and API."""
        return f"http://{self.host}:{self.port}"

    def config(self) -> dict[str, Any]:
        """The configuration as a mapping (written as JSON, which is YAML)."""
        return {
            "global": {
                "scrape_interval": f"{self.scrape_interval_s:g}s",
                "scrape_timeout": f"{min(self.scrape_interval_s, 10.0):g}s",
                "evaluation_interval": f"{self.evaluation_interval_s:g}s",
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": job.job,
                    "metrics_path": job.metrics_path,
                    "static_configs": [{"targets": list(job.targets)}],
                }
                for job in self.jobs
            ],
        }

    def _write_config(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(self.config(), indent=2) + "\n")

    def command(self) -> list[str]:
        """The ``prometheus`` command line (the port must be known, i.e. after :meth:`start`)."""
        binary = self.binary or find_binary("prometheus")
        if binary is None:
            raise PrometheusError(
                "prometheus not found: install Debian's prometheus package (scripts/test-deps.sh)"
            )
        return [
            str(binary),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.work_dir / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",  # POST /-/reload after configure()
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ]

    def start(self) -> PrometheusServer:
        """Start the server and wait until ``/-/ready`` answers 200.

        Raises:
            PrometheusError: Not installed, exited, or not ready within ``startup_timeout_s``;
                the message ends with the tail of its log.
        """
        if self.is_alive():
            raise PrometheusError(f"the Prometheus server is already running (pid {self.pid})")
        self._port = self._requested_port or free_port(self.host)
        self._write_config()
        command = self.command()
        started = time.monotonic()
        with self.log_file.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.work_dir,
                start_new_session=True,  # a Ctrl-C meant for the tests does not hit it
            )
        logger.info('starting prometheus pid=%d port=%d config="%s"', self._process.pid, self.port,
                    self.config_file)
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        logger.info('prometheus ready pid=%d startup_seconds="%.2f"', self._process.pid,
                    time.monotonic() - started)
        return self

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout_s
        last = "no answer yet"
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with code {self._process.returncode} during start-up:\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as response:
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:  # 503 while the TSDB opens
                last = f"HTTP {exc.code}"
            except OSError as exc:  # not listening yet
                last = str(exc)
            if time.monotonic() >= deadline:
                raise PrometheusError(
                    f"prometheus not ready after {self.startup_timeout_s:.0f}s ({last}):\n"
                    + self.log_tail()
                )
            time.sleep(0.1)

    def configure(
        self, *, jobs: Sequence[ScrapeJob] | None = None, rule_files: Sequence[Path] | None = None
    ) -> None:
        """Replace the scrape jobs and/or the rule files of the running server (``/-/reload``).

        Raises:
            PrometheusError: The server refused the new configuration (the message says why).
        """
        if jobs is not None:
            self.jobs = tuple(jobs)
        if rule_files is not None:
            self.rule_files = tuple(Path(p) for p in rule_files)
        self._write_config()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10.0):
                pass
        except urllib.error.HTTPError as exc:
            raise PrometheusError(
                f"prometheus refused the configuration: {exc.read().decode(errors='replace')}"
            ) from exc

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``stop_timeout_s``."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("prometheus pid=%d ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.wait(timeout=self.stop_timeout_s)
        logger.info("prometheus pid=%d stopped code=%s", process.pid, process.returncode)
        self._process = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the HTTP API ---------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` with query parameters; the ``data`` of a successful answer.

        Raises:
            PrometheusError: The API answered with an error (a bad query, say), or not at all.
        """
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10.0) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        except OSError as exc:
            raise PrometheusError(f"GET {url} failed: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(
                f"GET {url}: {body.get('errorType', 'error')}: {body.get('error', body)}"
            )
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: ``[{"metric": {...}, "value": [ts, "1.5"]}, ...]``.

        Raises:
            PrometheusError: A bad expression, or a result that is not a vector.
        """
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr!r} gave a {data['resultType']}, expected a vector")
        return list(data["result"])

    def values(self, expr: str, *, by: str) -> dict[str, float]:
        """An instant query's values keyed by one label (``""`` where the label is absent)."""
        return {r["metric"].get(by, ""): float(r["value"][1]) for r in self.query(expr)}

    def wait_for(self, expr: str, *, timeout_s: float = 30.0, interval_s: float = 0.5) -> list[dict[str, Any]]:
        """Query ``expr`` until it returns something; the result.

        Raises:
            PrometheusError: Still empty after ``timeout_s`` (the message shows the targets).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() >= deadline:
                targets = [
                    (t["labels"].get("job"), t["health"], t.get("lastError", ""))
                    for t in self.api("targets")["activeTargets"]
                ]
                raise PrometheusError(f"{expr!r} still empty after {timeout_s:.0f}s; targets: {targets}")
            time.sleep(interval_s)


# -- what the code exports ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric family as defined in the code: its name, type, labels and where."""

    name: str
    type: MetricType
    labels: frozenset[str]
    source: str

    def samples(self) -> dict[str, frozenset[str]]:
        """The sample names a scrape shows for it, and the labels of each."""
        if self.type == "counter":
            base = self.name.removesuffix("_total")
            return {f"{base}_total": self.labels, f"{base}_created": self.labels}
        if self.type == "histogram":
            return {
                f"{self.name}_bucket": self.labels | {"le"},
                f"{self.name}_sum": self.labels,
                f"{self.name}_count": self.labels,
                f"{self.name}_created": self.labels,
            }
        if self.type == "summary":
            return {
                f"{self.name}_sum": self.labels,
                f"{self.name}_count": self.labels,
                f"{self.name}_created": self.labels,
            }
        return {self.name: self.labels}


_CONSTRUCTORS: dict[str, MetricType] = {
    "Counter": "counter",
    "Gauge": "gauge",
    "Histogram": "histogram",
    "Summary": "summary",
    "CounterMetricFamily": "counter",
    "GaugeMetricFamily": "gauge",
    "HistogramMetricFamily": "histogram",
    "SummaryMetricFamily": "summary",
}


def _strings(node: ast.AST | None) -> list[str] | None:
    if isinstance(node, ast.List | ast.Tuple) and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
    ):
        return [e.value for e in node.elts]  # type: ignore[attr-defined]
    return None


def _definitions(path: Path, root: Path) -> Iterable[MetricDef]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        kind = _CONSTRUCTORS.get(called)
        if kind is None or not node.args:
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        labels = _strings(node.args[2]) if len(node.args) > 2 else None
        for keyword in node.keywords:
            if keyword.arg in ("labelnames", "labels"):
                labels = _strings(keyword.value)
        where = f"{path.relative_to(root.parent)}:{node.lineno}"
        if labels is None and (len(node.args) > 2 or any(k.arg in ("labelnames", "labels") for k in node.keywords)):
            raise ValueError(f"{where}: metric {first.value!r} has labels that are not a literal list")
        yield MetricDef(first.value, kind, frozenset(labels or ()), where)


def code_metrics(roots: Sequence[Path] = CODE_ROOTS) -> dict[str, MetricDef]:
    """Every metric family the code under ``roots`` defines, by family name.

    ``collections.Counter`` calls are not mistaken for metrics: only calls whose first argument
    is a string literal count, and ``Counter("...")`` of a string is never used for tallies here.

    Raises:
        ValueError: A family defined twice with different types or labels.
    """
    found: dict[str, MetricDef] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for metric in _definitions(path, root):
                known = found.get(metric.name)
                if known is not None and (known.type, known.labels) != (metric.type, metric.labels):
                    raise ValueError(f"{metric.name} defined as {known} and as {metric}")
                found.setdefault(metric.name, metric)
    return found


#: Triton's per-model series the rules and the dashboard may use (cumulative counters without
#: a ``_total`` suffix; durations in microseconds), as ``tritonserver`` 2.x exports them.
TRITON_METRICS: dict[str, frozenset[str]] = {
    name: frozenset({"model", "version"})
    for name in (
        "nv_inference_request_success",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
        "nv_inference_pending_request_count",
    )
} | {"nv_inference_request_failure": frozenset({"model", "version", "reason"})}

#: Series Prometheus makes itself.
PROMETHEUS_METRICS: dict[str, frozenset[str]] = {
    "up": frozenset(),
    "scrape_duration_seconds": frozenset(),
    "ALERTS": frozenset({"alertname", "alertstate", "severity"}),
}


def exported_samples(roots: Sequence[Path] = CODE_ROOTS) -> dict[str, frozenset[str]]:
    """Every sample name a query may use, with its labels (``job`` and ``instance`` included):
    the code's metrics, Triton's and Prometheus' own."""
    samples: dict[str, frozenset[str]] = {}
    for metric in code_metrics(roots).values():
        samples.update(metric.samples())
    samples.update(TRITON_METRICS)
    samples.update(PROMETHEUS_METRICS)
    return {name: labels | TARGET_LABELS for name, labels in samples.items()}


# -- PromQL -----------------------------------------------------------------------------------------

_AGGREGATIONS = frozenset(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile".split()
)
_GROUPING = frozenset("by without on ignoring group_left group_right".split())
_KEYWORDS = _AGGREGATIONS | _GROUPING | frozenset("and or unless bool offset atan2 inf nan".split())
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_GRAFANA_VAR = re.compile(r"\$(?:\{[^}]*\}|[A-Za-z0-9_]+)")
_MATCHER = re.compile(r"""([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)""")
_CONSTANT = re.compile(r"\b(?:vector|time)\s*\(")
_LABEL_REPLACE = re.compile(r"""label_replace\s*\(.*?,\s*"([A-Za-z_][A-Za-z0-9_]*)\"""", re.DOTALL)
_NUMBER = re.compile(r"[0-9.]+(?:[eE][+-]?[0-9]+)?[a-zA-Z]*|0x[0-9a-fA-F]+")


@dataclass
class PromqlReferences:
    """What an expression refers to.

    Attributes:
        selectors: ``(metric name, labels matched in its braces)`` per vector selector.
        grouping: Labels named in ``by``/``without``/``on``/``ignoring``/``group_*`` lists.
    """

    selectors: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)

    @property
    def metrics(self) -> set[str]:
        """The metric names."""
        return {name for name, _ in self.selectors}


def _skip_quoted(text: str, i: int) -> int:
    quote = text[i]
    i += 1
    while i < len(text) and text[i] != quote:
        i += 2 if text[i] == "\\" and quote != "`" else 1
    if i >= len(text):
        raise ValueError(f"unterminated string in {text!r}")
    return i + 1


def _closing(text: str, i: int, opening: str, closing: str) -> int:
    """Index after the bracket that closes the one at ``i`` (strings skipped)."""
    depth = 0
    while i < len(text):
        char = text[i]
        if char in "\"'`":
            i = _skip_quoted(text, i)
            continue
        if char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {opening!r} in {text!r}")


def promql_references(expr: str) -> PromqlReferences:
    """The metric names, matcher labels and grouping labels of a PromQL expression.

    Grafana's variables (``$__rate_interval``, ``${deployment}``) are skipped wherever they are.

    Raises:
        ValueError: Unbalanced brackets or an unterminated string.
    """
    refs = PromqlReferences()
    text = expr
    i = 0
    last_metric: str | None = None  # a name whose matchers may follow right after it
    depth = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
            continue
        if char in "()":
            depth += 1 if char == "(" else -1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in {text!r}")
            i += 1
            last_metric = None
            continue
        if char == "#":  # a comment runs to the end of the line
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        if char in "\"'`":
            i = _skip_quoted(text, i)
            last_metric = None
            continue
        if char == "$":
            var = _GRAFANA_VAR.match(text, i)
            i = var.end() if var else i + 1
            continue
        if char == "{":
            end = _closing(text, i, "{", "}")
            labels = frozenset(m.group(1) for m in _MATCHER.finditer(text, i + 1, end - 1))
            if last_metric is not None:
                refs.selectors[-1] = (last_metric, labels)
            else:
                names = [m.group(2).strip("\"'`") for m in _MATCHER.finditer(text, i + 1, end - 1)
                         if m.group(1) == "__name__"]
                refs.selectors += [(name, labels - {"__name__"}) for name in names]
            last_metric = None
            i = end
            continue
        if char == "[":
            i = _closing(text, i, "[", "]")
            last_metric = None
            continue
        if char.isdigit() or (char == "." and i + 1 < len(text) and text[i + 1].isdigit()):
            number = _NUMBER.match(text, i)
            i = number.end() if number else i + 1
            last_metric = None
            continue
        ident = _IDENT.match(text, i)
        if ident is None:
            i += 1
            last_metric = None
            continue
        name = ident.group(0)
        i = ident.end()
        j = i
        while j < len(text) and text[j].isspace():
            j += 1
        follows_paren = j < len(text) and text[j] == "("
        last_metric = None
        if name in _GROUPING:
            if follows_paren:
                end = _closing(text, j, "(", ")")
                refs.grouping |= {g.strip() for g in text[j + 1 : end - 1].split(",") if g.strip()}
                i = end
            continue
        if name.lower() in _KEYWORDS or follows_paren:
            continue  # an operator, an aggregation or a function
        refs.selectors.append((name, frozenset()))
        last_metric = name
    if depth:
        raise ValueError(f"unbalanced '(' in {text!r}")
    return refs


def check_expression(expr: str, known: Mapping[str, frozenset[str]]) -> list[str]:
    """What in ``expr`` is not in ``known`` (sample name -> labels): one line per problem.

    A selector's matcher labels must be labels of its metric; a grouping label must be a label
    of some metric the expression selects (``label_replace`` targets aside: name them in
    ``known`` through a recorded series).
    """
    problems: list[str] = []
    try:
        refs = promql_references(expr)
    except ValueError as exc:
        return [str(exc)]
    if not refs.selectors and not _CONSTANT.search(expr):
        problems.append(f"selects no metric: {expr!r}")
    available: set[str] = set()
    for name, labels in refs.selectors:
        if name not in known:
            problems.append(f"unknown metric {name!r} in {expr!r}")
            continue
        available |= known[name]
        extra = labels - known[name]
        if extra:
            problems.append(f"{name} has no label {sorted(extra)} in {expr!r}")
    missing = refs.grouping - available - {"le"}
    if missing and not any(name not in known for name, _ in refs.selectors):
        problems.append(f"grouping by {sorted(missing)}, which no selected metric has, in {expr!r}")
    return problems


# -- rule files -------------------------------------------------------------------------------------

_KEY_LINE = re.compile(r"^(?P<indent>\s*)(?:-\s+)?(?P<key>[A-Za-z_]+):\s*(?P<value>.*)$")


def _yaml_items(path: Path, keys: Sequence[str]) -> list[tuple[str, str]]:
    """``(key, value)`` of the lines with one of ``keys`` in file order (plain, quoted or block
    scalar values) in a simple YAML file."""
    lines = path.read_text().splitlines()
    items: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        match = _KEY_LINE.match(lines[i])
        i += 1
        if match is None or match.group("key") not in keys:
            continue
        value = match.group("value").strip()
        if value[:1] in ("|", ">"):
            block: list[str] = []
            indent: int | None = None
            while i < len(lines):
                line = lines[i]
                if line.strip():
                    width = len(line) - len(line.lstrip())
                    if indent is None:
                        indent = width
                    if width < indent:
                        break
                block.append(line[indent or 0 :])
                i += 1
            joiner = "\n" if value.startswith("|") else " "
            value = joiner.join(block).strip()
        elif value[:1] in ("'", '"'):
            quote = value[0]
            inner = value[1 : value.rindex(quote)]
            value = inner.replace("''", "'") if quote == "'" else json.loads(f'"{inner}"')
        else:
            value = re.sub(r"\s+#.*$", "", value)
        items.append((match.group("key"), value))
    return items


def yaml_values(path: Path, key: str) -> list[str]:
    """Every value of ``key:`` in a simple YAML file, in order (see :func:`_yaml_items`)."""
    return [value for _, value in _yaml_items(path, (key,))]


def rule_expressions(path: Path) -> list[str]:
    """Every ``expr:`` of a rule file, in order (alerting and recording rules alike)."""
    return yaml_values(path, "expr")


def rule_names(path: Path) -> tuple[list[str], list[str]]:
    """The ``record:`` names and the ``alert:`` names of a rule file."""
    return yaml_values(path, "record"), yaml_values(path, "alert")


def known_series(rule_paths: Sequence[Path], roots: Sequence[Path] = CODE_ROOTS) -> dict[str, frozenset[str]]:
    """:func:`exported_samples` plus the series the rule files record, with their labels.

    A recorded series' labels are its expression's grouping labels and ``label_replace``
    targets, or, for an expression without grouping, the labels of the series it selects.
    """
    known = exported_samples(roots)
    for path in rule_paths:
        for name, expr in _records_with_expressions(path):
            refs = promql_references(expr)
            labels = refs.grouping | set(_LABEL_REPLACE.findall(expr))
            if not labels:
                for metric, _ in refs.selectors:
                    labels |= known.get(metric, frozenset())
            known[name] = frozenset(labels - {"le"})
    return known


def _records_with_expressions(path: Path) -> list[tuple[str, str]]:
    """Each ``record:`` name with the ``expr:`` of its rule (the next one before any ``alert:``)."""
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for key, value in _yaml_items(path, ("record", "alert", "expr")):
        if key == "record":
            pending = value
        elif key == "alert":
            pending = None
        elif pending is not None:
            pairs.append((pending, value))
            pending = None
    return pairs


def rule_files(directory: Path = RULES_DIR) -> list[Path]:
    """The deployed rule files (``rules/*.yml``, as ``prometheus.yml`` loads them)."""
    return sorted(directory.glob("*.yml"))
