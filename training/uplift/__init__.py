"""Uplift from a campaign log: the log joined to features (`data`), the training job (`job`),
its evaluation (`evaluate`) and plots (`plots`). The learners live in `training.models.uplift`."""

from training.uplift.data import CampaignFit, arm_labels, fit_from_campaign_log, log_features

__all__ = ["CampaignFit", "arm_labels", "fit_from_campaign_log", "log_features"]
