// Helpers around the generated client (gen/, made by `make sdk`): a gRPC transport that
// sends the bearer token on every call, and the google.rpc details of a failed call.
// Everything else is the generated code: `createClient(ProjectService, transport)`.

import type { Interceptor, Transport } from "@connectrpc/connect";
import { ConnectError } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  type BadRequest,
  BadRequestSchema,
  type ErrorInfo,
  ErrorInfoSchema,
} from "../gen/google/rpc/error_details_pb.js";

/**
 * A transport to one Slipway address (`slipway dev`, or the proxy in front of an
 * install), e.g. `http://127.0.0.1:7800`, authenticating every call with `token`.
 */
export function slipwayTransport(baseUrl: string, token: string): Transport {
  const bearer: Interceptor = (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
  return createGrpcTransport({ baseUrl, interceptors: [bearer] });
}

/**
 * What Slipway says about a failed call: its `ErrorInfo` (stable `reason`) and
 * `BadRequest` field violations, when present.
 */
export function errorDetails(error: unknown): {
  error: ConnectError;
  info?: ErrorInfo;
  badRequest?: BadRequest;
} {
  const connectError = ConnectError.from(error);
  return {
    error: connectError,
    info: connectError.findDetails(ErrorInfoSchema)[0],
    badRequest: connectError.findDetails(BadRequestSchema)[0],
  };
}
