// A first call: list your organizations and create a project in the first one.
//
//   SLIPWAY_URL=http://127.0.0.1:7800 SLIPWAY_TOKEN=slp_… npm run quickstart

import { Code, createClient } from "@connectrpc/connect";
import { OrganizationService } from "../gen/slipway/identity/v1/organization_service_pb.js";
import { ProjectService } from "../gen/slipway/catalog/v1/project_service_pb.js";
import { errorDetails, slipwayTransport } from "./index.js";

const transport = slipwayTransport(
  process.env.SLIPWAY_URL ?? "http://127.0.0.1:7800",
  process.env.SLIPWAY_TOKEN ?? "",
);
const organizations = createClient(OrganizationService, transport);
const projects = createClient(ProjectService, transport);

try {
  const { organizations: mine } = await organizations.listOrganizations({ pageSize: 10 });
  console.log("organizations:", mine.map((o) => o.name).join(", "));
  const { project } = await projects.createProject({
    organizationId: mine[0].id,
    project: { name: "from-typescript", description: "created with the TypeScript SDK" },
  });
  console.log("created project", project?.name, project?.id);
} catch (failure) {
  const { error, info, badRequest } = errorDetails(failure);
  console.error(`${Code[error.code]}: ${error.rawMessage}`, info?.reason ?? "", badRequest?.fieldViolations ?? "");
  process.exitCode = 1;
}
