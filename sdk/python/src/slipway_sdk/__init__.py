"""Small helpers around the generated Slipway client.

The generated code (``slipway.<domain>.v1`` packages, made by ``make sdk``) is the whole
API: one ``*_pb2`` module of messages and one ``*_pb2_grpc`` module of stubs per proto
file. What it cannot know is how Slipway is reached, so this module adds only that:

* :class:`Client`: one channel to one address (``slipway dev`` serves every API on one
  port; a real install puts one proxy in front, see deploy/nginx) that sends
  ``authorization: Bearer <token>`` on every call, with a stub per public service;
* :func:`error_details`: the ``google.rpc`` details every Slipway error carries
  (``ErrorInfo`` with a stable ``reason``, ``BadRequest`` field violations, …), decoded.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Optional

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from slipway.catalog.v1 import (
    cluster_service_pb2_grpc,
    deployment_rule_service_pb2_grpc,
    environment_service_pb2_grpc,
    git_credential_service_pb2_grpc,
    project_service_pb2_grpc,
    registry_service_pb2_grpc,
    service_service_pb2_grpc,
    variable_service_pb2_grpc,
)
from slipway.deploy.v1 import (
    deployment_service_pb2_grpc,
    notification_service_pb2_grpc,
    preview_service_pb2_grpc,
)
from slipway.identity.v1 import (
    api_token_service_pb2_grpc,
    audit_service_pb2_grpc,
    invitation_service_pb2_grpc,
    member_service_pb2_grpc,
    organization_service_pb2_grpc,
    role_service_pb2_grpc,
    user_service_pb2_grpc,
)
from slipway.logs.v1 import log_service_pb2_grpc

__all__ = ["Client", "ErrorDetails", "error_details"]


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _Bearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the token to every call. An interceptor rather than call credentials, because
    gRPC only sends call credentials over TLS and ``slipway dev`` speaks plaintext."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self._header],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)


class Client:
    """A Slipway client: every public service, on one channel, with one token.

    ``target`` is ``host:port``. Plaintext by default (``slipway dev``); pass
    ``credentials=grpc.ssl_channel_credentials()`` for an install behind TLS. Use it as a
    context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        target: str,
        token: str,
        *,
        credentials: Optional[grpc.ChannelCredentials] = None,
    ) -> None:
        if credentials is None:
            channel = grpc.insecure_channel(target)
        else:
            channel = grpc.secure_channel(target, credentials)
        self._raw = channel
        self.channel = grpc.intercept_channel(channel, _Bearer(token))
        c = self.channel
        # identity
        self.organizations = organization_service_pb2_grpc.OrganizationServiceStub(c)
        self.members = member_service_pb2_grpc.MemberServiceStub(c)
        self.invitations = invitation_service_pb2_grpc.InvitationServiceStub(c)
        self.roles = role_service_pb2_grpc.RoleServiceStub(c)
        self.api_tokens = api_token_service_pb2_grpc.ApiTokenServiceStub(c)
        self.users = user_service_pb2_grpc.UserServiceStub(c)
        self.audit = audit_service_pb2_grpc.AuditServiceStub(c)
        # catalog
        self.projects = project_service_pb2_grpc.ProjectServiceStub(c)
        self.environments = environment_service_pb2_grpc.EnvironmentServiceStub(c)
        self.services = service_service_pb2_grpc.ServiceServiceStub(c)
        self.clusters = cluster_service_pb2_grpc.ClusterServiceStub(c)
        self.registries = registry_service_pb2_grpc.RegistryServiceStub(c)
        self.git_credentials = git_credential_service_pb2_grpc.GitCredentialServiceStub(c)
        self.variables = variable_service_pb2_grpc.VariableServiceStub(c)
        self.deployment_rules = deployment_rule_service_pb2_grpc.DeploymentRuleServiceStub(c)
        # deploy (the orchestrator)
        self.deployments = deployment_service_pb2_grpc.DeploymentServiceStub(c)
        self.previews = preview_service_pb2_grpc.PreviewServiceStub(c)
        self.notifications = notification_service_pb2_grpc.NotificationServiceStub(c)
        # logs
        self.logs = log_service_pb2_grpc.LogServiceStub(c)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclasses.dataclass
class ErrorDetails:
    """A failed call as Slipway describes it: code, message and the google.rpc details
    present (``None`` for those absent)."""

    code: grpc.StatusCode
    message: str
    error_info: Optional[error_details_pb2.ErrorInfo] = None
    bad_request: Optional[error_details_pb2.BadRequest] = None
    resource_info: Optional[error_details_pb2.ResourceInfo] = None
    precondition_failure: Optional[error_details_pb2.PreconditionFailure] = None
    retry_info: Optional[error_details_pb2.RetryInfo] = None

    @property
    def reason(self) -> str:
        """``ErrorInfo.reason``, the stable machine-readable cause ("" when absent)."""
        return self.error_info.reason if self.error_info is not None else ""

    @property
    def field_violations(self) -> dict[str, str]:
        """``BadRequest`` violations as {field: description}."""
        if self.bad_request is None:
            return {}
        return {v.field: v.description for v in self.bad_request.field_violations}


_DETAIL_FIELDS = {
    "error_info": error_details_pb2.ErrorInfo,
    "bad_request": error_details_pb2.BadRequest,
    "resource_info": error_details_pb2.ResourceInfo,
    "precondition_failure": error_details_pb2.PreconditionFailure,
    "retry_info": error_details_pb2.RetryInfo,
}


def error_details(error: grpc.RpcError) -> ErrorDetails:
    """Decodes the ``grpc-status-details-bin`` trailer of a failed call."""
    details = ErrorDetails(code=error.code(), message=error.details() or "")
    status = rpc_status.from_call(error)
    if status is None:
        return details
    for packed in status.details:
        for field, message_type in _DETAIL_FIELDS.items():
            if packed.Is(message_type.DESCRIPTOR):
                message = message_type()
                packed.Unpack(message)
                setattr(details, field, message)
    return details
