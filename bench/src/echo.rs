//! The floor: a bare tonic unary echo, and the same echo served through the full kit
//! (health, reflection, gRPC-Web, request id, trace span + metrics, load shed, timeout),
//! driven by the same client at concurrency 1 and 64. The server runtime ([`start`]) and
//! the load generator ([`drive`]) are shared with the other gRPC scenarios.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
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

/// A running server on a runtime of its own; [`RunningServer::stop`] shuts it down.
///
/// The server gets one worker thread and the client (the bench's main runtime) the other
/// core, so every stack is measured on the same, fixed share of the machine instead of
/// competing with the load generator for whichever core is free.
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Runtime,
}

/// The one-worker runtime a server under test runs on.
pub fn server_runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
}

/// A free local port, bound, and its address: for a server that must know its own address
/// before it is built (see [`start_on`]).
pub fn bind() -> std::io::Result<(SocketAddr, std::net::TcpListener)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    Ok((listener.local_addr()?, listener))
}

/// Serves on `runtime`: `serve` gets a listener on a free local port and the shutdown signal.
pub fn start<F>(
    runtime: tokio::runtime::Runtime,
    serve: impl FnOnce(TcpListener, BoxFuture<'static, ()>) -> F + Send + 'static,
) -> anyhow::Result<RunningServer>
where
    F: Future<Output = ()> + Send,
{
    // Bound here, adopted by the server's runtime inside its task: a runtime cannot be
    // entered (nor dropped) from the bench's own.
    match bind() {
        Ok(bound) => start_on(runtime, bound, serve),
        Err(error) => {
            runtime.shutdown_background();
            Err(error.into())
        }
    }
}

/// [`start`] on a listener already [`bind`]ed.
pub fn start_on<F>(
    runtime: tokio::runtime::Runtime,
    (addr, std_listener): (SocketAddr, std::net::TcpListener),
    serve: impl FnOnce(TcpListener, BoxFuture<'static, ()>) -> F + Send + 'static,
) -> anyhow::Result<RunningServer>
where
    F: Future<Output = ()> + Send,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let task = runtime.spawn(async move {
        if let Ok(listener) = TcpListener::from_std(std_listener) {
            serve(
                listener,
                Box::pin(async {
                    let _ = stopped.await;
                }),
            )
            .await;
        }
    });
    Ok(RunningServer {
        addr,
        stop,
        task,
        runtime,
    })
}

impl RunningServer {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.runtime.shutdown_background();
    }
}

fn start_echo(stack: Stack) -> anyhow::Result<RunningServer> {
    match stack {
        Stack::Bare => start(server_runtime("bare-server")?, |listener, shutdown| async {
            let _ = tonic::transport::Server::builder()
                .add_service(EchoServiceServer::new(Echo))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    shutdown,
                )
                .await;
        }),
        Stack::Kit => {
            let server = GrpcServer::new(ServerSettings::default(), Metrics::new("bench")?)
                .add_service(EchoServiceServer::new(Echo));
            start(server_runtime("kit-server")?, |listener, shutdown| async {
                let _ = server.serve(listener, shutdown).await;
            })
        }
    }
}

/// One request of a scenario, on a client that [`drive`] clones for every worker.
pub trait Rpc: Clone + Send + 'static {
    fn call(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

impl Rpc for EchoServiceClient<Channel> {
    async fn call(&mut self) -> anyhow::Result<()> {
        self.echo(EchoRequest {
            payload: vec![7; 16],
        })
        .await?;
        Ok(())
    }
}

pub struct Sample {
    requests_per_second: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Connects `client` to `addr`, warms up, then runs `concurrency` callers for `duration`.
pub async fn drive<C: Rpc>(
    addr: SocketAddr,
    client: impl FnOnce(Channel) -> C,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Sample> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let client = client(channel);
    // Warm-up: connections, allocator, caches.
    let warm_until = Instant::now() + Duration::from_millis(300);
    let mut warm = client.clone();
    while Instant::now() < warm_until {
        warm.call().await?;
    }

    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut client = client.clone();
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3)?;
            while Instant::now() < deadline {
                let sent = Instant::now();
                client.call().await?;
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

/// Throughput, p50 and p99 of `scenario`: the medians over `samples`.
pub fn summarize(scenario: &str, samples: &[Sample]) -> [Figure; 3] {
    let of = |value: fn(&Sample) -> f64| median(samples.iter().map(value).collect());
    [
        Figure::new(
            scenario,
            "throughput",
            of(|s| s.requests_per_second),
            "req/s",
        ),
        Figure::new(scenario, "latency_p50", of(|s| s.p50_us), "us"),
        Figure::new(scenario, "latency_p99", of(|s| s.p99_us), "us"),
    ]
}

/// Prints `measured` beside `floor` (the same metrics, in the same order) and keeps it.
pub fn compare(figures: &mut Vec<Figure>, measured: [Figure; 3], floor: &[Figure; 3]) {
    for (figure, floor) in measured.into_iter().zip(floor) {
        let figure = figure.against(floor);
        figure.print();
        figures.push(figure);
    }
}

/// The concurrencies every gRPC scenario is driven at.
pub const CONCURRENCY: [usize; 2] = [1, 64];

/// What [`run`] measured: every figure, and the bare tonic floor per [`CONCURRENCY`], for
/// other gRPC scenarios to be compared with.
pub struct Floors {
    pub figures: Vec<Figure>,
    pub bare: Vec<[Figure; 3]>,
}

pub async fn run(measure: &Measure) -> anyhow::Result<Floors> {
    let bare = start_echo(Stack::Bare)?;
    let kit = start_echo(Stack::Kit)?;
    let mut floors = Floors {
        figures: Vec::new(),
        bare: Vec::new(),
    };
    for concurrency in CONCURRENCY {
        // Rounds alternate bare and kit so drift on a shared machine hits both alike.
        let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..measure.rounds.max(1) {
            for (server, samples) in [&bare, &kit].into_iter().zip(&mut samples) {
                let sample = drive(
                    server.addr,
                    EchoServiceClient::new,
                    concurrency,
                    measure.duration,
                );
                samples.push(sample.await?);
            }
            if measure.verbose {
                let last = |stack: &[Sample]| stack.last().map_or(0.0, |s| s.requests_per_second);
                eprintln!(
                    "round c{concurrency}: bare {:.0} req/s, kit {:.0} req/s",
                    last(&samples[0]),
                    last(&samples[1])
                );
            }
        }
        let [bare_samples, kit_samples] = samples;
        let floor = summarize(
            &format!("{}.c{concurrency}", Stack::Bare.scenario()),
            &bare_samples,
        );
        for figure in &floor {
            figure.print();
        }
        floors.figures.extend(floor.iter().cloned());
        let kit_figures = summarize(
            &format!("{}.c{concurrency}", Stack::Kit.scenario()),
            &kit_samples,
        );
        compare(&mut floors.figures, kit_figures, &floor);
        floors.bare.push(floor);
    }
    bare.stop().await;
    kit.stop().await;
    Ok(floors)
}
