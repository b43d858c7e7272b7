"""The Python SDK against a running Slipway, as a first user would drive it.

Run by tests/tests/python_sdk.rs (part of `make test`), which generates the SDK, starts
`slipway dev` on a fresh data directory and passes its address and the owner token it prints:

    SLIPWAY_TARGET=127.0.0.1:7800 SLIPWAY_TOKEN=slp_… \\
        target/sdk/venv/bin/python -m unittest discover -s sdk/python/tests -v

With the generated client it creates an organization, then, in the `default`
organization (whose `local` cluster runs workloads), a project, an environment on the
`local` cluster and a CONTAINER service, deploys the service through the orchestrator's DeploymentService, waits for the deployment to end
and reads the environment's status. `slipway dev` runs workloads as local processes: a
container service runs its local run command (`runtime.command`) in place of the image, so
the deployment must end DEPLOYED, the service must answer over HTTP, and every status read
back must agree.
"""

import os
import socket
import time
import urllib.request
import unittest
import uuid

import grpc

from slipway.catalog.v1 import (
    cluster_service_pb2,
    environment_pb2,
    environment_service_pb2,
    project_pb2,
    project_service_pb2,
    runtime_pb2,
    service_pb2,
    service_service_pb2,
)
from slipway.common.v1 import common_pb2
from slipway.deploy.v1 import deployment_pb2, deployment_service_pb2, environment_status_pb2
from slipway.identity.v1 import organization_pb2, organization_service_pb2
from slipway_sdk import Client, error_details

# How long the test waits for things that happen in the background (the local cluster's
# registration, the deployment) before it reports them as never happening. Not a
# performance bound: only there so a hung server fails the test instead of hanging it.
PATIENCE_S = 60.0

Status = deployment_pb2.DeploymentStatus
FINAL_DEPLOY_STATUSES = {
    Status.DEPLOYMENT_STATUS_DEPLOYED,
    Status.DEPLOYMENT_STATUS_BUILD_ERROR,
    Status.DEPLOYMENT_STATUS_DEPLOYMENT_ERROR,
    Status.DEPLOYMENT_STATUS_CANCELED,
}


def _setting(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise RuntimeError(
            f"{name} is not set: this test runs against a live Slipway "
            "(tests/tests/python_sdk.rs starts one and sets it)"
        )
    return value


def _wait(what: str, probe):
    """Calls `probe` until it returns something truthy; fails after PATIENCE_S."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not there after {PATIENCE_S:.0f} s")
        time.sleep(0.2)


class Quickstart(unittest.TestCase):
    def setUp(self) -> None:
        self.client = Client(_setting("SLIPWAY_TARGET"), _setting("SLIPWAY_TOKEN"))
        self.addCleanup(self.client.close)

    def the_default_organization(self) -> organization_pb2.Organization:
        listed = self.client.organizations.ListOrganizations(
            organization_service_pb2.ListOrganizationsRequest(page_size=100)
        )
        named = [o for o in listed.organizations if o.name == "default"]
        self.assertEqual(len(named), 1, listed)
        return named[0]

    def create_organization(self) -> organization_pb2.Organization:
        """Organizations are created by people: `slipway dev`'s owner token signs in as the
        default organization's owner user, who becomes the new one's OWNER too."""
        name = f"sdk-{uuid.uuid4().hex[:8]}"
        created = self.client.organizations.CreateOrganization(
            organization_service_pb2.CreateOrganizationRequest(
                organization=organization_pb2.Organization(name=name),
                request_id=str(uuid.uuid4()),
            )
        ).organization
        self.assertEqual(created.name, name)
        self.assertTrue(created.id)
        listed = self.client.organizations.ListOrganizations(
            organization_service_pb2.ListOrganizationsRequest(page_size=100)
        )
        self.assertIn(name, [o.name for o in listed.organizations], listed)
        return created

    def test_invalid_input_comes_back_as_field_violations(self) -> None:
        organization = self.the_default_organization()
        with self.assertRaises(grpc.RpcError) as raised:
            self.client.projects.CreateProject(
                project_service_pb2.CreateProjectRequest(
                    organization_id=organization.id,
                    project=project_pb2.Project(name="Not A DNS Label"),
                )
            )
        details = error_details(raised.exception)
        self.assertEqual(details.code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertIn("project.name", details.field_violations, details)

    def test_quickstart_deploys_a_container_service_and_reads_its_status(self) -> None:
        self.create_organization()
        organization = self.the_default_organization()

        project = self.client.projects.CreateProject(
            project_service_pb2.CreateProjectRequest(
                organization_id=organization.id,
                project=project_pb2.Project(name="shop", description="from the Python SDK"),
                request_id=str(uuid.uuid4()),
            )
        ).project
        self.assertTrue(project.id)
        self.assertEqual(project.organization_id, organization.id)

        def local_cluster():
            listed = self.client.clusters.ListClusters(
                cluster_service_pb2.ListClustersRequest(organization_id=organization.id, page_size=10)
            )
            return next((c for c in listed.clusters if c.name == "local"), None)

        # `slipway dev` registers it right after it starts serving.
        cluster = _wait("the local cluster", local_cluster)

        environment = self.client.environments.CreateEnvironment(
            environment_service_pb2.CreateEnvironmentRequest(
                project_id=project.id,
                environment=environment_pb2.Environment(
                    name="dev",
                    mode=common_pb2.ENVIRONMENT_MODE_DEVELOPMENT,
                    cluster_id=cluster.id,
                ),
            )
        ).environment
        self.assertEqual(environment.project_id, project.id)
        self.assertEqual(environment.cluster_id, cluster.id)

        port = _free_port()
        service = self.client.services.CreateService(
            service_service_pb2.CreateServiceRequest(
                environment_id=environment.id,
                service=service_pb2.Service(
                    name="web",
                    kind=common_pb2.SERVICE_KIND_CONTAINER,
                    container=service_pb2.ContainerSettings(
                        source=service_pb2.ImageSource(image="library/python", tag="3.12-slim"),
                        runtime=runtime_pb2.RuntimeSettings(
                            ports=[runtime_pb2.Port(internal_port=port)],
                            # What the local process runtime runs in place of the image.
                            command=["python3", "-m", "http.server", str(port)],
                        ),
                    ),
                ),
            )
        ).service
        self.assertEqual(service.kind, common_pb2.SERVICE_KIND_CONTAINER)
        self.assertEqual(service.container.source.tag, "3.12-slim")

        queued = self.client.deployments.DeployService(
            deployment_service_pb2.DeployServiceRequest(
                service_id=service.id, request_id=str(uuid.uuid4())
            )
        ).deployment
        self.assertEqual(queued.action, deployment_pb2.DEPLOYMENT_ACTION_DEPLOY)
        self.assertEqual(queued.environment_id, environment.id)

        def ended():
            deployment = self.client.deployments.GetDeployment(
                deployment_service_pb2.GetDeploymentRequest(id=queued.id)
            ).deployment
            return deployment if deployment.status in FINAL_DEPLOY_STATUSES else None

        deployment = _wait(f"the end of deployment {queued.id}", ended)
        outcome = Status.Name(deployment.status)
        print(f"deployment {deployment.id} ended {outcome}: {deployment.error_message or 'no error'}")
        self.assertTrue(deployment.HasField("end_time"), deployment)
        self.assertEqual(deployment.status, Status.DEPLOYMENT_STATUS_DEPLOYED, deployment)
        self.assertEqual(deployment.error_message, "", deployment)

        def answers():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
                    return reply.status
            except OSError:
                return None

        self.assertEqual(_wait(f"the service on port {port}", answers), 200)

        status = self.client.deployments.GetEnvironmentStatus(
            deployment_service_pb2.GetEnvironmentStatusRequest(environment_id=environment.id)
        ).environment_status
        self.assertEqual(status.environment_id, environment.id)
        self.assertEqual(status.last_deployment_id, deployment.id)
        self.assertEqual(status.last_deployment_status, deployment.status)
        web = [s for s in status.services if s.service_id == service.id]
        self.assertEqual(len(web), 1, status)
        self.assertEqual(web[0].service_name, "web")
        self.assertEqual(web[0].service_kind, common_pb2.SERVICE_KIND_CONTAINER)
        self.assertEqual(web[0].last_deployment_id, deployment.id)
        self.assertEqual(web[0].last_deployment_status, deployment.status)
        print(
            "service web:",
            environment_status_pb2.ServiceDeploymentState.Name(web[0].deployment_state),
            environment_status_pb2.RuntimeState.Name(web[0].runtime_state),
            web[0].message,
        )



def _free_port() -> int:
    """A port nothing listens on now (the kernel's pick), for the service to take."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    unittest.main()
