//! The floor: a bare tonic unary echo, and the same echo served through the full kit
//! (health, reflection, gRPC-Web, request id, trace span + metrics, load shed, timeout),
//! driven by the same client at concurrency 1 and 64.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use slipway_config::ServerSettings;
use slipway_kit::GrpcServer;
use slipway_telemetry::metrics::Metrics;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::report::Figure;

#[allow(clippy::all, reason = "generated code")]
pub mod pb {
    tonic::include_proto!("slipway.bench.v1");
}

use pb::echo_service_client::EchoServiceClient;
use pb::echo_service_server::{EchoService, EchoServiceServer};
use pb::{EchoRequest, EchoResponse};

#[derive(Debug, Clone, Copy, Default)]
struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, tonic::Status> {
        Ok(tonic::Response::new(EchoResponse {
            payload: request.into_inner().payload,
        }))
    }
}

pub struct Measure {
    pub duration: Duration,
    pub rounds: usize,
    /// Print every round's throughput to stderr, to see the machine's drift.
    pub verbose: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    Bare,
    Kit,
}

impl Stack {
    fn scenario(self) -> &'static str {
        match self {
            Self::Bare => "echo.bare_tonic",
            Self::Kit => "echo.kit_stack",
        }
    }
}

/// A running echo server on a runtime of its own; dropping `stop` shuts it down.
///
/// The server gets one worker thread and the client (the bench's main runtime) the other
/// core, so both stacks are measured on the same, fixed share of the machine instead of
/// competing with the load generator for whichever core is free.
struct RunningServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Runtime,
}

fn start(stack: Stack) -> anyhow::Result<RunningServer> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(match stack {
            Stack::Bare => "bare-server",
            Stack::Kit => "kit-server",
        })
        .enable_all()
        .build()?;
    // Bound here, adopted by the server's runtime inside its task: a runtime cannot be
    // entered from the bench's own.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let task = match stack {
        Stack::Bare => runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(std_listener) else {
                return;
            };
            let _ = tonic::transport::Server::builder()
                .add_service(EchoServiceServer::new(Echo))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    shutdown,
                )
                .await;
        }),
        Stack::Kit => {
            let metrics = Metrics::new("bench")?;
            let server = GrpcServer::new(ServerSettings::default(), metrics)
                .add_service(EchoServiceServer::new(Echo));
            runtime.spawn(async move {
                let Ok(listener) = TcpListener::from_std(std_listener) else {
                    return;
                };
                let _ = server.serve(listener, shutdown).await;
            })
        }
    };
    Ok(RunningServer {
        addr,
        stop,
        task,
        runtime,
    })
}

struct Sample {
    requests_per_second: f64,
    p50_us: f64,
    p99_us: f64,
}

async fn drive(addr: SocketAddr, concurrency: usize, duration: Duration) -> anyhow::Result<Sample> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    // Warm-up: connections, allocator, caches.
    let warm_until = Instant::now() + Duration::from_millis(300);
    let mut warm = EchoServiceClient::new(channel.clone());
    while Instant::now() < warm_until {
        warm.echo(EchoRequest {
            payload: vec![7; 16],
        })
        .await?;
    }

    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut client = EchoServiceClient::new(channel.clone());
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3)?;
            while Instant::now() < deadline {
                let sent = Instant::now();
                client
                    .echo(EchoRequest {
                        payload: vec![7; 16],
                    })
                    .await?;
                histogram.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))?;
            }
            anyhow::Ok(histogram)
        }));
    }
    let mut total = Histogram::<u64>::new(3)?;
    for worker in workers {
        total.add(worker.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Sample {
        requests_per_second: total.len() as f64 / elapsed,
        p50_us: total.value_at_quantile(0.50) as f64,
        p99_us: total.value_at_quantile(0.99) as f64,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

pub async fn run(measure: &Measure) -> anyhow::Result<Vec<Figure>> {
    let bare = start(Stack::Bare)?;
    let kit = start(Stack::Kit)?;
    let mut figures = Vec::new();
    for concurrency in [1usize, 64] {
        // Rounds alternate bare and kit so drift on a shared machine hits both alike.
        let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..measure.rounds.max(1) {
            samples[0].push(drive(bare.addr, concurrency, measure.duration).await?);
            samples[1].push(drive(kit.addr, concurrency, measure.duration).await?);
            if measure.verbose {
                let last = |stack: &[Sample]| stack.last().map_or(0.0, |s| s.requests_per_second);
                eprintln!(
                    "round c{concurrency}: bare {:.0} req/s, kit {:.0} req/s",
                    last(&samples[0]),
                    last(&samples[1])
                );
            }
        }
        let mut per_stack = Vec::new();
        for (stack, samples) in [Stack::Bare, Stack::Kit].into_iter().zip(samples) {
            let scenario = format!("{}.c{concurrency}", stack.scenario());
            per_stack.push([
                Figure::new(
                    &scenario,
                    "throughput",
                    median(samples.iter().map(|s| s.requests_per_second).collect()),
                    "req/s",
                ),
                Figure::new(
                    &scenario,
                    "latency_p50",
                    median(samples.iter().map(|s| s.p50_us).collect()),
                    "us",
                ),
                Figure::new(
                    &scenario,
                    "latency_p99",
                    median(samples.iter().map(|s| s.p99_us).collect()),
                    "us",
                ),
            ]);
        }
        let [floor, kit_figures] = [&per_stack[0], &per_stack[1]];
        for figure in floor {
            figure.print();
            figures.push(figure.clone());
        }
        for (figure, floor) in kit_figures.iter().zip(floor) {
            let figure = figure.clone().against(floor);
            figure.print();
            figures.push(figure);
        }
    }
    for server in [bare, kit] {
        let _ = server.stop.send(());
        let _ = server.task.await;
        server.runtime.shutdown_background();
    }
    Ok(figures)
}
