"""Run a real single-node Apache Kafka broker (KRaft mode, no ZooKeeper) with the machine's Java.

The jars come from Maven Central through ``scripts/kafka-fetch.sh`` (version in
``deploy/kafka/pom.xml``) into ``build/kafka/libs/``; Kafka 4 brokers need Java 17 or newer.
One process is both broker and controller, listens on 127.0.0.1 only, and keeps its data, its
``server.properties`` and its log in the work dir. The settings suit tests, not production:
replication factor 1 everywhere, no automatic topic creation, no delay before the first group
rebalance.

From a script, in the foreground until SIGTERM or Ctrl-C::

    python -m openlfr.testing.kafka_broker --work-dir build/kafka/run --port 9092
"""

from __future__ import annotations

import argparse
import atexit
import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

from openlfr import paths
from openlfr.kafka.admin import BrokerUnavailableError, wait_for_broker
from openlfr.kafka.acls import ADMIN_USER, BROKER_USER
from openlfr.kafka.credentials import BrokerCredentials, broker_security_properties
from openlfr.kafka.security import Bootstrap, KafkaConnection
from openlfr.subprocesses import ChildProcess, free_port

logger = logging.getLogger(__name__)

_MAIN_CLASS = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"
_LOG4J2 = """\
# Written by openlfr.testing.kafka_broker: warnings and errors only, plus the start-up line.
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.raftserver.name = kafka.server.KafkaRaftServer
logger.raftserver.level = INFO
"""


class KafkaBrokerError(RuntimeError):
    """The Kafka broker could not be found, started or kept running."""


def default_libs_dir() -> Path:
    """Where ``scripts/kafka-fetch.sh`` puts the jars: ``<build dir>/kafka/libs``."""
    return paths.build_dir() / "kafka" / "libs"


def fetch_script() -> Path:
    """The script that downloads the jars (``scripts/kafka-fetch.sh`` in the checkout)."""
    return paths.REPO_ROOT / "scripts" / "kafka-fetch.sh"


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in URL-safe base64 without padding (``Uuid``)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka's Uuid.randomUuid() avoids these too (CLI flags)
            return text


class KafkaBroker(ChildProcess):
    """A single-node KRaft Kafka broker and controller as a subprocess.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with KafkaBroker(work_dir=tmp) as broker:
            producer = Producer({"bootstrap.servers": broker.bootstrap})
    """

    not_started_error = KafkaBrokerError
    what = "broker"


    def __init__(
        self,
        *,
        work_dir: Path,
        libs_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        controller_port: int | None = None,
        num_partitions: int = 3,
        heap: str = "512m",
        properties: Mapping[str, str] | None = None,
        java: str = "java",
        jvm_args: Sequence[str] = (),
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 15.0,
        credentials: BrokerCredentials | None = None,
    ) -> None:
        """Describe the broker; nothing starts until :meth:`start`.

        Args:
            work_dir: Holds ``server.properties``, ``log4j2.properties``, ``broker.log`` and the
                data (``data/``). Data already there (formatted by an earlier run) is kept.
            libs_dir: The broker's jars; ``build/kafka/libs`` if not given.
            host: The address both listeners bind to and the broker advertises.
            port: The client port; a free one is chosen at start if not given.
            controller_port: The KRaft controller port; a free one if not given.
            num_partitions: Partitions of a topic created without a count.
            heap: The JVM's maximum heap (``-Xmx``).
            properties: Broker settings that override or add to the test defaults.
            java: The ``java`` executable.
            jvm_args: Further JVM options, placed before the main class.
            startup_timeout_s: How long :meth:`start` waits for the broker to answer.
            stop_timeout_s: How long :meth:`stop` waits after SIGTERM before it kills.
            credentials: Serve clients on SASL_SSL only (SCRAM-SHA-512 users of the ACL table made
                at format time, the broker's certificate from these credentials), the controller
                on mutual TLS, with ``StandardAuthorizer``: nothing is allowed that no ACL grants
                (``openlfr.kafka.acls``), except to ``openlfr-admin`` (:meth:`connect_as`).
        """
        if num_partitions < 1:
            raise ValueError(f"num_partitions={num_partitions}, expected >= 1")
        if startup_timeout_s <= 0:
            raise ValueError(f"startup_timeout_s={startup_timeout_s}, expected > 0")
        if stop_timeout_s < 0:
            raise ValueError(f"stop_timeout_s={stop_timeout_s}, expected >= 0")
        if port is not None and port == controller_port:
            raise ValueError(f"port and controller_port are both {port}, expected two ports")
        # Absolute: the JVM runs with the work dir as its current directory.
        self.work_dir = Path(work_dir).resolve()
        self.libs_dir = Path(libs_dir) if libs_dir is not None else default_libs_dir()
        self.host = host
        self.num_partitions = num_partitions
        self.heap = heap
        self.extra_properties = dict(properties or {})
        self.java = java
        self.jvm_args = tuple(jvm_args)
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.credentials = credentials
        self._requested_ports = (port, controller_port)
        self._ports: tuple[int, int] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    # -- addresses and files -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The client port (known once started)."""
        if self._ports is None:
            raise KafkaBrokerError("the broker has not been started")
        return self._ports[0]

    @property
    def controller_port(self) -> int:
        """The KRaft controller port (known once started)."""
        if self._ports is None:
            raise KafkaBrokerError("the broker has not been started")
        return self._ports[1]

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap.servers``."""
        return f"{self.host}:{self.port}"

    def connect_as(self, user: str) -> KafkaConnection:
        """A SASL_SSL connection as ``user`` (a broker started with ``credentials``)."""
        if self.credentials is None:
            raise KafkaBrokerError("the broker was started without credentials: it has no users")
        return self.credentials.connection(self.bootstrap, user)

    @property
    def admin(self) -> Bootstrap:
        """How the project's clients reach the broker with every right: ``bootstrap``, or a
        connection as ``openlfr-admin`` when the broker has credentials."""
        return self.bootstrap if self.credentials is None else self.connect_as(ADMIN_USER)

    @property
    def data_dir(self) -> Path:
        """The broker's ``log.dirs`` (topic partitions and the KRaft metadata log)."""
        return self.work_dir / "data"

    @property
    def log_file(self) -> Path:
        """The broker's combined stdout and stderr."""
        return self.work_dir / "broker.log"

    @property
    def config_file(self) -> Path:
        """The ``server.properties`` written at start."""
        return self.work_dir / "server.properties"

    # -- configuration -------------------------------------------------------------------------

    def broker_properties(self) -> dict[str, str]:
        """The broker's settings: the test defaults, then ``properties`` (ports must be known)."""
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},"
            f"CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": str(self.num_partitions),
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            # The internal topics: one replica, and few partitions so the first group or
            # transaction does not wait for 50 partitions to be created.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "3",
            # controlled.shutdown.enable stays true: without it a stopped broker is not
            # deregistered, and a restart on the same data waits out the old session (~10 s).
            # Retention is enforced every second (the default is every 5 min), so a test can
            # watch records age out on a scaled clock (seconds of retention instead of hours).
            "log.retention.check.interval.ms": "1000",
            "log.initial.task.delay.ms": "1000",  # the first check (30 s after start by default)
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        if self.credentials is not None:
            settings.update(broker_security_properties(
                client_listener=f"{self.host}:{self.port}",
                advertised=f"{self.host}:{self.port}",
                controller_listener=f"{self.host}:{self.controller_port}",
                keystore=str(self.credentials.keystore),
                truststore=str(self.credentials.ca_file),
                broker_password=self.credentials.password(BROKER_USER).get_secret_value(),
            ))
        settings.update(self.extra_properties)
        return settings

    def jvm_options(self) -> list[str]:
        """The JVM options: heap, logging configuration, then ``jvm_args``."""
        return [
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",  # one small heap on a few cores: no GC threads to spare
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.work_dir}",
            "-Dlog4j2.shutdownHookEnabled=false",
            *self.jvm_args,
        ]

    def _classpath(self) -> str:
        return f"{self.libs_dir}{os.sep}*"

    def command(self) -> list[str]:
        """The broker's command line."""
        return [
            self.java,
            *self.jvm_options(),
            "-cp",
            self._classpath(),
            _MAIN_CLASS,
            str(self.config_file),
        ]

    def _check_installation(self) -> None:
        if shutil.which(self.java) is None:
            raise KafkaBrokerError(f"'{self.java}' is not on PATH; Kafka brokers need Java 17+")
        if not any(self.libs_dir.glob("kafka_2.13-*.jar")):
            raise KafkaBrokerError(
                f"no Kafka jars in {self.libs_dir}; run {fetch_script()} to download them"
            )

    def _write_config(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"{key}={value}" for key, value in self.broker_properties().items()]
        self.config_file.write_text(
            "# Written by openlfr.testing.kafka_broker at each start.\n" + "\n".join(lines) + "\n"
        )
        (self.work_dir / "log4j2.properties").write_text(_LOG4J2)

    def _format_storage(self) -> None:
        """Format ``data/`` for KRaft unless an earlier run has (the data is kept)."""
        if (self.data_dir / "meta.properties").is_file():
            return
        command = [
            self.java,
            *self.jvm_options(),
            "-XX:TieredStopAtLevel=1",  # a short-lived tool: the quick JIT alone starts faster
            "-cp",
            self._classpath(),
            _STORAGE_TOOL,
            "format",
            f"--cluster-id={_cluster_id()}",
            f"--config={self.config_file}",
            *(self.credentials.scram_format_args() if self.credentials is not None else ()),
        ]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                cwd=self.work_dir,
                timeout=self.startup_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaBrokerError(
                f"formatting {self.data_dir} took over {self.startup_timeout_s:.0f}s"
            ) from exc
        if result.returncode != 0:
            raise KafkaBrokerError(
                f"formatting {self.data_dir} failed with code {result.returncode}:\n"
                f"{(result.stdout + result.stderr).strip()[-4000:]}"
            )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> KafkaBroker:
        """Format the storage if needed, start the broker and wait until it answers metadata.

        Raises:
            KafkaBrokerError: Java or the jars are missing, the broker exited, or it did not
                answer within ``startup_timeout_s``; the message ends with the tail of its log.
        """
        if self.is_alive():
            raise KafkaBrokerError(f"the broker is already running (pid {self.pid})")
        self._check_installation()
        port, controller_port = self._requested_ports
        port = port if port is not None else free_port(self.host)
        while controller_port is None or controller_port == port:
            controller_port = free_port(self.host)
        self._ports = (port, controller_port)

        started = time.monotonic()
        self._write_config()
        self._format_storage()
        with self.log_file.open("ab") as log:
            # The child keeps its own copy of the descriptor; ours can close at once.
            self._process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.work_dir,
                start_new_session=True,  # a Ctrl-C meant for the tests does not hit the broker
            )
        atexit.register(self.stop)  # no broker outlives an interpreter that exits normally
        logger.info(
            'starting kafka pid=%d work_dir="%s" port=%d controller_port=%d',
            self._process.pid,
            self.work_dir,
            *self._ports,
        )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        logger.info(
            'kafka ready pid=%d bootstrap="%s" startup_seconds="%.2f"',
            self._process.pid,
            self.bootstrap,
            self.startup_s,
        )
        return self

    def _port_open(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((self.host, self.port)) == 0

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout_s
        last_error = "port not open yet"
        while True:
            code = self._process.poll() if self._process is not None else None
            if code is not None:
                raise KafkaBrokerError(
                    f"kafka exited with code {code} during start-up\n{self.failure_report()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaBrokerError(
                    f"kafka did not answer within {self.startup_timeout_s:.0f}s ({last_error})\n"
                    + self.failure_report()
                )
            # The port first: until it is open, librdkafka would only log refused connections.
            if self._port_open():
                try:
                    wait_for_broker(self.admin, timeout_s=min(1.0, remaining))
                    return
                except BrokerUnavailableError as exc:
                    last_error = str(exc)
            time.sleep(0.1)

    def stop(self, *, timeout_s: float | None = None) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it has not exited after ``timeout_s``.

        ``timeout_s`` defaults to ``stop_timeout_s``. Safe to call twice or before start.
        """
        process = self._process
        if process is None:
            return
        atexit.unregister(self.stop)
        if timeout_s is None:
            timeout_s = self.stop_timeout_s
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "kafka pid=%d ignored SIGTERM for %.0fs; killing it", process.pid, timeout_s
                )
                process.kill()
                process.wait()
        logger.info("kafka pid=%d stopped code=%s", process.pid, process.returncode)
        self._process = None

    def failure_report(self, *, lines: int = 40) -> str:
        """Where the log is and its tail, for error messages."""
        return f"log tail of {self.log_file}:\n{self.log_tail(lines)}"

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run a broker in the foreground; print its bootstrap address once it answers."""
    parser = argparse.ArgumentParser(
        prog="python -m openlfr.testing.kafka_broker",
        description="Run a single-node Kafka broker (KRaft) for tests and local runs.",
    )
    parser.add_argument("--work-dir", type=Path, required=True, help="data, config and log")
    parser.add_argument("--port", type=int, help="client port (default: a free one)")
    parser.add_argument("--controller-port", type=int, help="KRaft port (default: a free one)")
    parser.add_argument("--libs-dir", type=Path, help="the jars (default: build/kafka/libs)")
    parser.add_argument("--partitions", type=int, default=3, help="num.partitions (default 3)")
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    broker = KafkaBroker(
        work_dir=args.work_dir,
        libs_dir=args.libs_dir,
        port=args.port,
        controller_port=args.controller_port,
        num_partitions=args.partitions,
        startup_timeout_s=args.startup_timeout,
    )
    try:
        broker.start()
    except KafkaBrokerError as exc:
        logger.error("%s", exc)
        return 1
    # The one line scripts wait for; flushed so a pipe sees it at once.
    print(broker.bootstrap, flush=True)
    try:
        while not stopping.is_set():
            code = broker.wait(timeout_s=0.5)
            if code is not None:
                logger.error("kafka exited with code %d\n%s", code, broker.failure_report())
                return 1
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
