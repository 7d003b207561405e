"""The retention console: pages for retention teams and CRM managers, served by the service
under /console (sign-in, overview, CRM metrics, risk list, customer, model).

`create_console(get_served, settings)` builds the Starlette app; `crm` holds the CRM metrics
maths that the console and `retention report` share.
"""

from features.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "ConsoleSettings": "serving.console.settings",
    "campaign_results": "serving.console.crm",
    "cohort_retention": "serving.console.crm",
    "create_console": "serving.console.app",
    "crm_metrics": "serving.console.crm",
})
