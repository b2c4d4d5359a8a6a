"""Every switch an operator may turn reaches `azd provision`, with one default, in one place.

azd fills infra/main.bicep only from infra/main.parameters.json (`${NAME}` or `${NAME=default}`); a parameter
not mapped there cannot be set with `azd env set`, and a value set by hand in the portal is overwritten by the
next provision. `azd pipeline config` copies only the variables azure.yaml lists, and the CI/CD workflow must
hand each one to `azd provision`. This test reads the four files and fails on any gap between them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra.test_infra import FUNCTION_APP_BICEP, INFRA, MAIN_BICEP, REPO, WORKFLOW, _yaml, parse_bicep

pytestmark = pytest.mark.infra

PARAMETERS_FILE = INFRA / "main.parameters.json"
AZURE_YAML = REPO / "azure.yaml"
# Set by azd itself for every environment (and by the workflow's job env); not pipeline variables.
AZD_OWN = {"AZURE_ENV_NAME", "AZURE_LOCATION"}
_REFERENCE = re.compile(r"^\$\{(?P<name>[A-Z][A-Z0-9_]*)(?:=(?P<default>[^}]*))?\}$")
# main.bicep parameters that reach an app setting under another name (the others share theirs, or none).
SETTING_OF_PARAMETER = {"joinWebUrlLookups": "AUTH_CONNECT_LOOKUP_SCOPE"}


def _declared() -> dict[str, Any]:
    return dict(parse_bicep(MAIN_BICEP)["parameters"])


def _mapped() -> dict[str, re.Match[str]]:
    mapped = json.loads(PARAMETERS_FILE.read_text())["parameters"]
    found = {}
    for name, entry in mapped.items():
        match = _REFERENCE.match(str(entry.get("value")))
        assert match, f"main.parameters.json: {name} must be a single ${{NAME}} or ${{NAME=default}}, not {entry}"
        found[name] = match
    return found


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pipeline() -> tuple[set[str], set[str]]:
    project = _yaml().safe_load(AZURE_YAML.read_text())
    return set(project["pipeline"]["variables"]), set(project["pipeline"]["secrets"])


def _provision_env() -> dict[str, str]:
    workflow = _yaml().safe_load(WORKFLOW.read_text())
    steps = workflow["jobs"]["deploy"]["steps"]
    (step,) = [s for s in steps if "azd provision" in s.get("run", "")]
    return {name: str(value) for name, value in step.get("env", {}).items()}


def resolve(env: dict[str, str]) -> dict[str, str]:
    """main.parameters.json as azd resolves it for an environment: `${NAME}`, or its default when NAME is unset."""
    values = {}
    for param, match in _mapped().items():
        name, default = match["name"], match["default"]
        values[param] = env[name] if name in env else (default or "")
    return values


def test_every_main_bicep_parameter_is_an_azd_environment_value() -> None:
    declared, mapped = _declared(), _mapped()
    missing = sorted(set(declared) - set(mapped))
    assert not missing, f"main.bicep parameters azd cannot set (not in main.parameters.json): {missing}"
    assert not sorted(set(mapped) - set(declared)), "main.parameters.json maps parameters main.bicep lacks"


def test_each_default_is_written_once_and_agrees() -> None:
    """A Bicep default and its `${NAME=default}` agree; where the code has a default too, that one as well."""
    from shared.settings_registry import SPECS_BY_NAME

    declared, mapped = _declared(), _mapped()
    for param, match in mapped.items():
        spec = declared[param]
        if spec.get("default") is None:
            assert match["default"] is None, f"{param} is required in Bicep but has a default in the parameters file"
            continue
        assert match["default"] is not None, (
            f"{param}: {match['name']} has no `=default`: an unset variable would pass an empty value over the Bicep "
            "default")
        assert match["default"] == _as_text(spec["default"]), f"{param}: parameters file and Bicep differ"
        setting = SETTING_OF_PARAMETER.get(param, match["name"])
        code = SPECS_BY_NAME.get(setting)
        if code is not None and code.default is not None:
            assert code.default == match["default"], (
                f"{setting}: the code's default {code.default!r} and the deployment's {match['default']!r} differ")


def test_the_app_credential_has_one_default() -> None:
    from shared.settings_registry import SPECS_BY_NAME

    assert SPECS_BY_NAME["ENTRA_APP_CREDENTIAL"].default == "federated"
    assert _mapped()["entraAppCredential"]["default"] == "federated"


def test_every_environment_value_is_a_pipeline_variable_or_secret() -> None:
    variables, secrets = _pipeline()
    declared = _declared()
    for param, match in _mapped().items():
        name = match["name"]
        if name in AZD_OWN:
            continue
        secure = any(d["type"] == "secure" for d in declared[param].get("decorators", []))
        listed = secrets if secure else variables
        assert name in listed, f"{name} ({param}) is not an azure.yaml pipeline {'secret' if secure else 'variable'}"
    names = {m["name"] for m in _mapped().values()}
    assert not sorted((variables | secrets) - names), "azure.yaml lists variables no parameter reads"


def test_the_workflow_passes_every_pipeline_value_to_azd_provision() -> None:
    variables, secrets = _pipeline()
    env = _provision_env()
    expected = {**{n: f"${{{{ vars.{n} }}}}" for n in variables}, **{n: f"${{{{ secrets.{n} }}}}" for n in secrets}}
    assert env == expected, (
        "the provision step must pass each azure.yaml variable and secret as it is, with no second default: "
        f"missing {sorted(set(expected) - set(env))}, extra or different "
        f"{sorted(k for k in env if expected.get(k) != env[k])}")
    # An unset GitHub variable is an empty string: the step unsets it so the parameters file's default applies.
    step_run = next(s["run"] for s in _yaml().safe_load(WORKFLOW.read_text())["jobs"]["deploy"]["steps"]
                    if "azd provision" in s.get("run", ""))
    assert "unset" in step_run


def test_every_parameter_is_used_by_main_bicep() -> None:
    """A mapped parameter that main.bicep never reads would be a switch connected to nothing."""
    text = MAIN_BICEP.read_text()
    for param in _declared():
        uses = len(re.findall(rf"(?<![\w.']){re.escape(param)}\b", text))
        assert uses >= 2, f"main.bicep declares {param} but never uses it"


def _function_app_reads(setting: str) -> str:
    value = parse_bicep(FUNCTION_APP_BICEP)["variables"]["appSettings"]["value"]
    return json.dumps({k.strip("'"): v for k, v in value.items()}.get(setting))


@pytest.mark.parametrize(("env_name", "param", "setting"), [
    ("MEETING_MANAGEMENT", "meetingManagement", "MEETING_MANAGEMENT"),
    ("CLIENT_SMS", "clientSms", "CLIENT_SMS"),
    ("CLIENT_SMS_REMINDER", "clientSmsReminder", "CLIENT_SMS_REMINDER"),
    ("JOIN_WEB_URL_LOOKUPS", "joinWebUrlLookups", "AUTH_CONNECT_LOOKUP_SCOPE"),
])
def test_azd_env_set_reaches_the_app_setting(env_name: str, param: str, setting: str) -> None:
    """`azd env set MEETING_MANAGEMENT true` → meetingManagement=true → the module → the app setting."""
    assert resolve({env_name: "true"})[param] == "true"
    assert resolve({})[param] == _as_text(_declared()[param]["default"])
    module_params = parse_bicep(MAIN_BICEP)["modules"]["functionApp"]["config"]["params"]
    assert module_params.get(param) == param, f"main.bicep does not pass {param} to the function app module"
    assert param in _function_app_reads(setting), f"function-app.bicep's {setting} does not read {param}"


def test_docs_tell_operators_to_use_azd_env_set() -> None:
    deploy = (REPO / "docs" / "deploy.md").read_text()
    assert "azd env set MEETING_MANAGEMENT true" in deploy
    assert Path(PARAMETERS_FILE).name in deploy
