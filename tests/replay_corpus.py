"""The replay fidelity corpus: multi-step agent trajectories, and three ways to record them.

Each ``Trajectory`` is what a code-acting agent writes, one code action per step: it
imports in its first step and uses the names later, defines helpers, classes and
closures that call its tools, keeps shared and cyclic objects, generators, open files,
``random`` state and a large value across steps, raises and recovers. Every step is
deterministic: the tools answer from their arguments alone and nothing reads the clock
(``DIVERGING`` holds the trajectories that are meant not to reproduce).

The three recording modes a user has (DESIGN.md, "Execution modes"), each returning the
id of the run it recorded into the store codetape is configured with:

- ``record_observed``: a smolagents ``CodeAgent`` with ``instrument(agent)``, its code run
  by smolagents' own ``LocalPythonExecutor``;
- ``record_docker``: the same agent with ``executor=CodetapeExecutor(Sandbox(image=...))``,
  its code run in codetape's Docker sandbox, its tools on the host;
- ``record_plain``: a hand-written agent loop over ``exec`` inside ``codetape.run``, with
  ``@codetape.code_action`` on the executor and ``@codetape.tool`` on the tools.

``record(trajectory, mode, image)`` picks one of them; ``play`` runs the agent the same
way without reading the store afterwards (to find the run id, ``record`` has to).

The model is scripted (``ScriptedModel``): no LLM is needed, and each run writes exactly
the trajectory's code. The benchmark reuses this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smolagents import CodeAgent, Model
from smolagents import tool as smolagents_tool
from smolagents.models import ChatMessage, MessageRole

import codetape
from codetape.integrations.smolagents import CodetapeExecutor, instrument

__all__ = [
    "DIVERGING",
    "MODES",
    "TOOLS",
    "TRAJECTORIES",
    "ScriptedModel",
    "Trajectory",
    "by_name",
    "play",
    "record",
    "record_docker",
    "record_observed",
    "record_plain",
    "run_docker",
    "run_observed",
]

# -- the host tools: deterministic, their answers depend on their arguments only ----------

PRICES = {"apple": 1.25, "pear": 0.8, "plum": 1.1, "kiwi": 0.6, "fig": 2.5}
WAREHOUSES = {"main": 12, "north": 5, "south": 0}
RATES = {"EUR": 0.92, "GBP": 0.79, "USD": 1.0}
NAMES = ("ada", "grace", "linus")


def get_price(item: str) -> float:
    """The unit price of one item.

    Args:
        item: the item's name, such as "apple"
    """
    return PRICES[item]


def get_stock(item: str, warehouse: str = "main") -> int:
    """How many of an item a warehouse holds.

    Args:
        item: the item's name, such as "apple"
        warehouse: "main", "north" or "south"
    """
    return WAREHOUSES[warehouse] + len(item)


def lookup_user(user_id: int) -> dict[str, Any]:
    """A user's record. Its keys are not in sorted order, its roles are a tuple and its
    score a float with no fractional part: a replay must give them back as they were.

    Args:
        user_id: the user's numeric id
    """
    return {"name": NAMES[user_id % 3], "id": user_id, "score": 3.0, "roles": ("admin", "ops")}


def convert(amount: float, currency: str = "EUR") -> float:
    """An amount in dollars, converted.

    Args:
        amount: dollars
        currency: "EUR", "GBP" or "USD"
    """
    return round(amount * RATES[currency], 2)


TOOLS: dict[str, Callable[..., Any]] = {
    f.__name__: f for f in (get_price, get_stock, lookup_user, convert)
}


# -- trajectories ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Trajectory:
    """One agent trajectory: its code actions in order, and what it needs.

    ``tools`` names the host tools (from ``TOOLS``) the code calls; ``imports`` is what
    smolagents must authorize (``additional_authorized_imports``); ``failing`` lists the
    steps that raise (the agent recovers in a later step); ``tmp_files`` are the files
    the code writes under ``/tmp``, removed after an in-process recording so that a
    replay cannot find them left over. The last step calls ``final_answer``.
    """

    name: str
    covers: str
    task: str
    steps: tuple[str, ...]
    tools: tuple[str, ...]
    imports: tuple[str, ...] = ()
    failing: tuple[int, ...] = ()
    tmp_files: tuple[str, ...] = ()


def _steps(*code: str) -> tuple[str, ...]:
    return tuple(c.strip("\n") for c in code)


IMPORTS = Trajectory(
    name="imports_used_later",
    covers="import x, import x as y, import a.b as c, from x import y in step 0, used later",
    task="Summarize the basket's prices",
    tools=("get_price",),
    imports=("json", "statistics", "urllib.parse", "collections", "math"),
    steps=_steps(
        """
import json
import statistics as st
import urllib.parse as urlparse
from collections import Counter
from math import sqrt

basket = ['apple', 'pear', 'plum', 'apple']
prices = [get_price(item) for item in basket]
print(prices)
len(prices)
""",
        """
mean = st.mean(prices)
print(round(mean, 4), round(sqrt(mean), 4))
counts = Counter(basket)
print(counts.most_common(2))
mean
""",
        """
query = urlparse.urlencode({'item': basket[0], 'n': counts['apple']})
print(query)
payload = json.dumps({'mean': round(mean, 4), 'query': query})
payload
""",
        """
final_answer(json.loads(payload)['query'])
""",
    ),
)

HELPERS = Trajectory(
    name="helper_functions",
    covers="functions defined in one step that call a tool, used and extended later",
    task="Price the cart with and without tax",
    tools=("get_price",),
    steps=_steps(
        """
def cost(items):
    return sum(get_price(i) for i in items)

cart = ['apple', 'pear']
print(cost(cart))
""",
        """
cart.append('kiwi')
total = cost(cart)
print(f'total {total:.2f}')
total
""",
        """
def with_tax(items, rate=0.2):
    return round(cost(items) * (1 + rate), 2)

print(with_tax(cart))
print(with_tax(cart, rate=0.1))
with_tax(cart)
""",
        """
final_answer(with_tax(cart))
""",
    ),
)

CLOSURES = Trajectory(
    name="closures_and_lambdas",
    covers="closures and lambdas defined in one step that call tools, used later",
    task="Rank fruit by price and convert the prices",
    tools=("get_price", "convert"),
    steps=_steps(
        """
def make_pricer(currency):
    def pricer(item):
        return convert(get_price(item), currency=currency)
    return pricer

in_eur = make_pricer('EUR')
in_gbp = make_pricer('GBP')
by_price = lambda items: sorted(items, key=lambda i: get_price(i))
print(in_eur('apple'))
""",
        """
print(in_gbp('pear'))
ranked = by_price(['plum', 'kiwi', 'apple'])
print(ranked)
ranked
""",
        """
table = {item: in_eur(item) for item in ranked}
print(table)
final_answer(table)
""",
    ),
)

CLASSES = Trajectory(
    name="class_instances",
    covers="a class defined in one step whose methods call a tool; instances used later",
    task="Find the most expensive cart",
    tools=("get_price",),
    steps=_steps(
        """
class Cart:
    def __init__(self, owner):
        self.owner = owner
        self.items = []

    def add(self, item, qty=1):
        self.items.append((item, qty))
        return self

    def total(self):
        return round(sum(get_price(i) * q for i, q in self.items), 2)

    def __repr__(self):
        return f'Cart({self.owner}, {len(self.items)} items)'

cart = Cart('ada').add('apple', 3).add('pear')
print(cart)
""",
        """
cart.add('plum', qty=2)
print(cart.total())
cart.total()
""",
        """
other = Cart('grace')
other.add('kiwi', 4)
carts = [cart, other]
print([c.total() for c in carts])
carts
""",
        """
final_answer(max(carts, key=lambda c: c.total()).owner)
""",
    ),
)

DATACLASSES = Trajectory(
    name="dataclass_instances",
    # smolagents' interpreter ignores decorators (``@dataclass`` would leave the class
    # without its __init__ there), so the code applies dataclass() as a call.
    covers="dataclasses defined in one step with methods calling a tool; instances later",
    task="Total an order and a doubled copy of it",
    tools=("get_price",),
    imports=("dataclasses",),
    steps=_steps(
        """
from dataclasses import dataclass, field, asdict

class Line:
    item: str
    qty: int = 1

    def cost(self):
        return round(get_price(self.item) * self.qty, 2)

class Order:
    id: str
    lines: list = field(default_factory=list)

    def total(self):
        return round(sum(line.cost() for line in self.lines), 2)

Line = dataclass(Line)
Order = dataclass(Order)
order = Order('o-1')
order.lines.append(Line('fig', 2))
print(order)
""",
        """
order.lines.append(Line('apple'))
print(order.total())
asdict(order)
""",
        """
copy = Order('o-2', [Line(line.item, line.qty * 2) for line in order.lines])
print(copy == order, copy.total(), copy.lines[0])
copy
""",
        """
final_answer([order.total(), copy.total()])
""",
    ),
)

SHARED = Trajectory(
    name="shared_and_cyclic",
    covers="aliased, nested mutable objects and a cycle, mutated through one name later",
    task="Keep an event log and a tree",
    tools=("lookup_user", "get_price"),
    steps=_steps(
        """
events = []
summary = {'events': events, 'owner': lookup_user(7)}
node = {'name': 'root', 'children': []}
node['children'].append({'name': 'leaf', 'parent': node})
print(summary['owner'])
print(node)
""",
        """
events.append('a')
events.append(get_price('apple'))
print(summary)
print(summary['events'] is events)
leaf = node['children'][0]
print(leaf['parent'] is node, leaf['parent']['name'])
""",
        """
summary['events'].append('b')
print(len(events), events[-1])
matrix = [[0] * 2] * 2
matrix[0][0] = 1
print(matrix)
""",
        """
matrix[1][1] = 5
print(matrix, matrix[0] is matrix[1])
final_answer(events)
""",
    ),
)

GENERATOR_AND_FILE = Trajectory(
    name="generator_and_open_file",
    covers="a generator that calls a tool lazily and an open file, both used next step",
    task="Log the prices one at a time",
    tools=("get_price",),
    imports=("pathlib",),
    tmp_files=("/tmp/codetape-corpus-log.txt",),
    steps=_steps(
        r"""
from pathlib import Path

pending = (get_price(item) for item in ['apple', 'fig', 'kiwi'])
first = next(pending)
logfile = Path('/tmp/codetape-corpus-log.txt').open('w')
logfile.write(f'first {first}\n')
print(first)
""",
        r"""
second = next(pending)
logfile.write(f'second {second}\n')
print(second)
second
""",
        """
rest = list(pending)
logfile.close()
print(rest)
print(Path('/tmp/codetape-corpus-log.txt').read_text())
""",
        """
final_answer([first, second] + rest)
""",
    ),
)

TMP_FILE = Trajectory(
    name="file_in_tmp",
    covers="a file written under /tmp in one step and read in later steps",
    task="Save a report and read it back",
    tools=("lookup_user", "get_stock"),
    imports=("json", "pathlib"),
    tmp_files=("/tmp/codetape-corpus-report.json",),
    steps=_steps(
        """
import json
from pathlib import Path

report = {'user': lookup_user(4), 'stock': get_stock('pear', warehouse='north')}
Path('/tmp/codetape-corpus-report.json').write_text(json.dumps(report))
print('saved', sorted(report))
""",
        """
loaded = json.loads(Path('/tmp/codetape-corpus-report.json').read_text())
print(loaded['user']['name'], loaded['stock'], loaded['user']['roles'])
loaded
""",
        """
with Path('/tmp/codetape-corpus-report.json').open() as fh:
    text = fh.read()
print(len(text), text[:20])
final_answer(loaded['stock'])
""",
    ),
)

RANDOM = Trajectory(
    name="random_across_steps",
    covers="random seeded by the code in step 0, drawn in later steps (module and Random)",
    task="Draw a sample",
    tools=("get_price",),
    imports=("random",),
    steps=_steps(
        """
import random

random.seed(1234)
rng = random.Random(99)
print('seeded')
""",
        """
draws = [random.randint(1, 100) for _ in range(5)]
print(draws)
roll = rng.random()
print(round(roll, 6))
""",
        """
pick = random.choice(['apple', 'pear', 'plum'])
print(pick, get_price(pick))
rng.randint(1, 6)
""",
        """
final_answer(draws)
""",
    ),
)

RECOVER = Trajectory(
    name="raise_then_recover",
    covers="a step that raises after printing, then a step that recovers",
    task="Total the stock of three fruits",
    tools=("get_stock",),
    failing=(1,),
    steps=_steps(
        """
stock = {item: get_stock(item) for item in ['apple', 'pear']}
print(stock)
""",
        """
print('checking fig')
print(stock['fig'])
""",
        """
stock['fig'] = get_stock('fig', warehouse='north')
print(stock)
sum(stock.values())
""",
        """
final_answer(sum(stock.values()))
""",
    ),
)

AGENT_EXCEPTION = Trajectory(
    name="agent_exception_class",
    covers="an exception class defined by the code, raised out of a step, then caught",
    task="Reserve stock",
    tools=("get_stock",),
    failing=(1,),
    steps=_steps(
        """
class OutOfStock(Exception):
    pass

def reserve(item, qty):
    left = get_stock(item, warehouse='main')
    if qty > left:
        raise OutOfStock(f'{item}: only {left} left')
    return left - qty

print(reserve('apple', 2))
""",
        """
reserve('kiwi', 100)
""",
        """
try:
    reserve('kiwi', 100)
except OutOfStock as err:
    failed = str(err)
    print('caught', failed)
failed
""",
        """
final_answer(failed)
""",
    ),
)

BIG_VALUE = Trajectory(
    name="big_value_carried",
    covers="a 20 MB value, shared by two names, carried unchanged through every step",
    task="Keep a large document around",
    tools=("get_price", "get_stock"),
    steps=_steps(
        """
blob = 'x' * (20 * 1024 * 1024)
doc = {'body': blob, 'price': get_price('plum')}
print(len(blob))
""",
        """
print(len(doc['body']), doc['body'] is blob)
sizes = [len(blob)]
sizes
""",
        """
sizes.append(get_stock('plum'))
print(sizes, blob[:3], doc['price'])
""",
        """
final_answer(len(blob) + sizes[-1])
""",
    ),
)

TOOL_ARGUMENTS = Trajectory(
    name="tool_argument_forms",
    covers="tools called with positional, keyword and mixed arguments; typed answers",
    task="Check stock and prices everywhere",
    tools=("get_stock", "lookup_user", "convert"),
    steps=_steps(
        """
a = get_stock('pear')
b = get_stock('pear', 'north')
c = get_stock(item='pear', warehouse='south')
d = get_stock('pear', warehouse='north')
print(a, b, c, d)
""",
        """
user = lookup_user(7)
print(user)
print(isinstance(user['roles'], tuple), isinstance(user['score'], float), list(user))
user
""",
        """
eur = convert(10.0, currency='EUR')
gbp = convert(amount=10.0, currency='GBP')
usd = convert(10.0)
print(eur, gbp, usd)
[a, b, c, d]
""",
        """
final_answer({'stock': [a, b, c, d], 'prices': [eur, gbp, usd], 'user': user['name']})
""",
    ),
)

_LEDGER_ITEMS = ("apple", "pear", "plum", "kiwi", "fig")
LONG = Trajectory(
    name="long_ledger",
    covers="20 steps: a ledger grown by one tool call per step (the replay-time benchmark)",
    task="Build a ledger over many steps",
    tools=("get_price",),
    imports=("statistics",),
    steps=(
        "import statistics as st\nledger = []\nprint('start')",
        *(
            f"ledger.append(round(get_price({_LEDGER_ITEMS[i % 5]!r}) * {i}, 2))\n"
            f"print(len(ledger), round(sum(ledger), 2))\nledger[-1]"
            for i in range(1, 19)
        ),
        "print(round(st.mean(ledger), 4))\nfinal_answer(round(sum(ledger), 2))",
    ),
)

TRAJECTORIES: tuple[Trajectory, ...] = (
    IMPORTS,
    HELPERS,
    CLOSURES,
    CLASSES,
    DATACLASSES,
    SHARED,
    GENERATOR_AND_FILE,
    TMP_FILE,
    RANDOM,
    RECOVER,
    AGENT_EXCEPTION,
    BIG_VALUE,
    TOOL_ARGUMENTS,
    LONG,
)

# Trajectories that must NOT reproduce: what they read changes between runs or images.
CLOCK_AND_UUID = Trajectory(
    name="clock_and_uuid",
    covers="a step reading the clock, a step drawing uuid4",
    task="Stamp and tag the order",
    tools=("get_price",),
    imports=("time", "uuid"),
    steps=_steps(
        """
import time

started = time.time()
print('started', started)
""",
        """
import uuid

token = str(uuid.uuid4())
print(token)
price = get_price('apple')
""",
        """
final_answer(token)
""",
    ),
)

READS_THE_IMAGE = Trajectory(
    name="reads_the_image",
    covers="a step reading a file that comes with the sandbox image",
    task="Read the message of the day",
    tools=("get_price",),
    imports=("pathlib",),
    steps=_steps(
        """
from pathlib import Path

motd = Path('/etc/motd')
greeting = motd.read_text().strip().splitlines()[0] if motd.exists() else None
print('motd', greeting)
""",
        """
final_answer(greeting)
""",
    ),
)

DIVERGING: tuple[Trajectory, ...] = (CLOCK_AND_UUID, READS_THE_IMAGE)


def by_name(name: str) -> Trajectory:
    """The trajectory called ``name`` (from ``TRAJECTORIES`` or ``DIVERGING``)."""
    found = [t for t in (*TRAJECTORIES, *DIVERGING) if t.name == name]
    if not found:
        raise KeyError(name)
    return found[0]


# -- a scripted model ------------------------------------------------------------------------


class ScriptedModel(Model):  # type: ignore[misc]  # smolagents ships no types
    """Stands in for an LLM: replies with the next code action of the script."""

    def __init__(self, script: tuple[str, ...]) -> None:
        super().__init__(model_id="scripted")
        self.script = list(script)

    def generate(self, messages: list[Any], stop_sequences: Any = None, **kwargs: Any) -> Any:
        if not self.script:
            raise AssertionError("the scripted model was asked for more steps than it has")
        code = self.script.pop(0)
        return ChatMessage(
            role=MessageRole.ASSISTANT, content=f"Thought: next.\n<code>\n{code}\n</code>"
        )


def _smolagents_tools(trajectory: Trajectory) -> list[Any]:
    return [smolagents_tool(TOOLS[name]) for name in trajectory.tools]


def _agent(trajectory: Trajectory, executor: Any = None) -> Any:
    return CodeAgent(
        tools=_smolagents_tools(trajectory),
        model=ScriptedModel(trajectory.steps),
        additional_authorized_imports=list(trajectory.imports),
        max_steps=len(trajectory.steps),
        verbosity_level=-1,
        name=trajectory.name,
        executor=executor,
    )


# -- the three recording modes ---------------------------------------------------------------


def _run_ids() -> set[str]:
    store = codetape.Store()
    with store.session():
        return {r.id for r in store.runs(limit=max(1, store.count_runs()))}


def _the_new_run(before: set[str]) -> str:
    new = _run_ids() - before
    if len(new) != 1:
        raise AssertionError(f"expected the agent to record one new run, found {sorted(new)}")
    return new.pop()


def _remove_tmp_files(trajectory: Trajectory) -> None:
    for name in trajectory.tmp_files:
        Path(name).unlink(missing_ok=True)


def run_observed(trajectory: Trajectory) -> None:
    """Run ``trajectory`` as a smolagents ``CodeAgent`` that runs its code in its own
    ``LocalPythonExecutor``, recorded with ``instrument(agent)``."""
    _remove_tmp_files(trajectory)
    try:
        instrument(_agent(trajectory)).run(trajectory.task)
    finally:
        _remove_tmp_files(trajectory)


def run_docker(trajectory: Trajectory, image: str) -> None:
    """Run ``trajectory`` as a smolagents ``CodeAgent`` whose code runs in codetape's
    Docker sandbox (``executor=CodetapeExecutor(codetape.Sandbox(image=image))``)."""
    with codetape.Sandbox(image=image) as sandbox:
        instrument(_agent(trajectory, CodetapeExecutor(sandbox))).run(trajectory.task)


def record_observed(trajectory: Trajectory) -> str:
    """``run_observed``, returning the id of the run it recorded."""
    before = _run_ids()
    run_observed(trajectory)
    return _the_new_run(before)


def record_docker(trajectory: Trajectory, image: str) -> str:
    """``run_docker``, returning the id of the run it recorded."""
    before = _run_ids()
    run_docker(trajectory, image)
    return _the_new_run(before)


@codetape.code_action
def execute(code: str, namespace: dict[str, Any]) -> None:
    """The plain agent loop's executor: the step's code, in the agent's namespace."""
    exec(code, namespace)


def record_plain(trajectory: Trajectory) -> str:
    """Record ``trajectory`` as a hand-written agent loop: each step ``exec``'d by a
    ``@codetape.code_action`` in one namespace holding the ``@codetape.tool`` tools and
    a ``final_answer`` tool; a step that raises is shown to the "model", which goes on."""
    answers: list[Any] = []

    def final_answer(answer: Any) -> Any:
        answers.append(answer)
        return answer

    namespace: dict[str, Any] = {name: codetape.tool(TOOLS[name]) for name in trajectory.tools}
    namespace["final_answer"] = codetape.tool(final_answer)
    _remove_tmp_files(trajectory)
    try:
        with codetape.run(trajectory.name, task=trajectory.task) as run:
            for code in trajectory.steps:
                try:
                    execute(code, namespace)
                except Exception:  # a real loop shows the error to its model
                    continue
                if answers:
                    break
            run.final_answer = answers[-1] if answers else None
    finally:
        _remove_tmp_files(trajectory)
    return run.id


MODES = ("observed", "docker", "plain")


def play(trajectory: Trajectory, mode: str, image: str | None = None) -> None:
    """Run ``trajectory``'s agent in ``mode`` (one of ``MODES``; ``docker`` needs
    ``image``), recording it, without reading the store."""
    if mode == "observed":
        run_observed(trajectory)
    elif mode == "docker":
        if image is None:
            raise ValueError("recording in Docker needs an image")
        run_docker(trajectory, image)
    elif mode == "plain":
        record_plain(trajectory)
    else:
        raise ValueError(f"unknown mode {mode!r}: one of {MODES}")


def record(trajectory: Trajectory, mode: str, image: str | None = None) -> str:
    """Record ``trajectory`` in ``mode`` and return the id of its run."""
    if mode == "plain":
        return record_plain(trajectory)
    before = _run_ids()
    play(trajectory, mode, image)
    return _the_new_run(before)
