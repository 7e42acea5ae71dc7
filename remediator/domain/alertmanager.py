"""The Alertmanager webhook payload (version "4"), as Alertmanager's ``notify/webhook`` package
sends it (``notify/webhook.Message``, ``template.Alert``).

Unknown fields are kept and ignored, so newer Alertmanagers (``notification_reason``,
``routeLabels``) are accepted. Validated by the intake (remediator.app.intake); no I/O here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field



class WebhookAlert(BaseModel):
    """One alert of a webhook notification (Alertmanager ``template.Alert``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(None, alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str = Field(min_length=1)


class WebhookMessage(BaseModel):
    """Alertmanager webhook payload version "4" (``notify/webhook.Message``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    version: Literal["4"]
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")
    alerts: list[WebhookAlert]
