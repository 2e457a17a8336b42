"""Agents as Markdown blueprints (spec C5): parse, find, render, check.

```python
from fanout.agents import load_blueprints

agents = load_blueprints()
task = agents["oral-explanation"].task({"question": "什么是逆否命题？", "learner_text": "..."})
```
"""

from fanout.agents.blueprint import Blueprint as Blueprint
from fanout.agents.blueprint import InputSpec as InputSpec
from fanout.agents.blueprint import MarkdownChecks as MarkdownChecks
from fanout.agents.blueprint import parse_blueprint as parse_blueprint
from fanout.agents.checks import check_json as check_json
from fanout.agents.checks import check_markdown as check_markdown
from fanout.agents.loader import builtin_blueprints as builtin_blueprints
from fanout.agents.loader import load_blueprint as load_blueprint
from fanout.agents.loader import load_blueprints as load_blueprints
from fanout.agents.loader import project_agents_dir as project_agents_dir
from fanout.agents.loader import user_agents_dir as user_agents_dir
from fanout.agents.schema import SchemaError as SchemaError
from fanout.agents.schema import check_schema as check_schema
from fanout.agents.schema import schema_problem as schema_problem

__all__ = [
    "Blueprint",
    "InputSpec",
    "MarkdownChecks",
    "SchemaError",
    "builtin_blueprints",
    "check_json",
    "check_markdown",
    "check_schema",
    "load_blueprint",
    "load_blueprints",
    "parse_blueprint",
    "project_agents_dir",
    "schema_problem",
    "user_agents_dir",
]
