//! The memory figures: RSS, heap and file descriptors per idle proxied
//! connection on the clients and the exit.

use super::load::{self, Route};
use super::procs::{self, Binaries, Mesh, Transport};
use super::report::{Bound, Figure};
use super::{origin_child, BenchError, Plan, IDLE_PER_CLIENT};
use std::path::Path;
use std::time::Duration;

/// One mesh holding `plan.idle` idle proxied connections: the usage of its
/// clients and exit before and after, and how many connections were open.
struct MemoryPass {
    before: Snapshot,
    after: Snapshot,
    open: usize,
}

/// Opens `plan.idle` idle connections over `clients` clients and one exit,
/// run as heap probes when `probe` (for the heap figures) and as the shipped
/// `meshproxy` otherwise (RSS and fds: the probe's counting allocator is the
/// system one, not the binary's).
async fn memory_pass(
    bin: &Binaries,
    work: &Path,
    plan: &Plan,
    clients: usize,
    probe: bool,
) -> Result<MemoryPass, BenchError> {
    let what = if probe { "heap probes" } else { "meshproxy" };
    println!(
        "bench: memory: {} idle connections over {clients} client(s), one exit ({what})",
        plan.idle
    );
    let (_origin_proc, origin) = origin_child(work)?;
    let name = if probe { "memheap" } else { "mem" };
    let mut mesh = Mesh::start(bin, work, name, Transport::Tcp, &[origin], clients, probe)?;
    let routes: Vec<Route> = mesh.clients.iter().map(|(_, a)| Route::Socks(*a)).collect();
    for route in &routes {
        // Also sets up each client's libp2p connection, which is not per-connection cost.
        load::wait_route(*route, origin, Duration::from_secs(30)).await.map_err(|e| {
            BenchError::Load(format!("memory mesh never carried a connection: {e}"))
        })?;
    }
    let before = snapshot(&mut mesh, probe)?;
    let mut held = Vec::new();
    let mut failed = 0;
    let mut left = plan.idle;
    for route in &routes {
        let n = left.min(IDLE_PER_CLIENT);
        left -= n;
        let (mut conns, f) = load::open_idle(*route, origin, n, 64).await;
        held.append(&mut conns);
        failed += f;
    }
    // Let the nodes finish any work the last opens queued before sampling.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = snapshot(&mut mesh, probe)?;
    let open = held.len();
    if failed > 0 {
        println!("bench:   {failed} of {} idle connections failed to open", plan.idle);
    }
    drop(held);
    if open == 0 {
        return Err(BenchError::Load("no idle connection opened".into()));
    }
    Ok(MemoryPass { before, after, open })
}

/// RSS, heap and fds per idle proxied connection on the clients and the exit.
pub(super) async fn memory_figures(
    bin: &Binaries,
    work: &Path,
    plan: &Plan,
) -> Result<Vec<Figure>, BenchError> {
    let clients = plan.idle.div_ceil(IDLE_PER_CLIENT).max(1);
    let MemoryPass { before, after, open } = memory_pass(bin, work, plan, clients, false).await?;
    let heap = memory_pass(bin, work, plan, clients, true).await?;

    let mut figures = vec![Figure::info(
        "memory.idle_connections",
        &format!("idle proxied connections held ({clients} clients)"),
        "conns",
        vec![open as f64],
    )];
    let per = |a: u64, b: u64, n: usize| (b as f64 - a as f64) / n.max(1) as f64;
    // Each client carried its share; the exit carried all of them.
    let client_conns = open as f64 / clients as f64;
    let mut client_rss = Vec::new();
    let mut client_heap = Vec::new();
    let mut client_fds = Vec::new();
    for (b, a) in before.clients.iter().zip(&after.clients) {
        client_rss.push((a.rss as f64 - b.rss as f64) / client_conns / 1024.0);
        client_fds.push((a.fds as f64 - b.fds as f64) / client_conns);
    }
    let heap_client_conns = heap.open as f64 / clients as f64;
    for (b, a) in heap.before.clients.iter().zip(&heap.after.clients) {
        client_heap.push((a.heap as f64 - b.heap as f64) / heap_client_conns / 1024.0);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    figures.push(
        Figure::info(
            "memory.rss_per_conn.client",
            "RSS per idle conn, client",
            "KiB",
            vec![mean(&client_rss)],
        )
        .with_target(Bound::AtMost, 16.0),
    );
    figures.push(
        Figure::info(
            "memory.rss_per_conn.exit",
            "RSS per idle conn, exit",
            "KiB",
            vec![per(before.exit.rss, after.exit.rss, open) / 1024.0],
        )
        .with_target(Bound::AtMost, 16.0),
    );
    figures.push(Figure::info(
        "memory.heap_per_conn.client",
        "heap per idle conn, client",
        "KiB",
        vec![mean(&client_heap)],
    ));
    figures.push(Figure::info(
        "memory.heap_per_conn.exit",
        "heap per idle conn, exit",
        "KiB",
        vec![per(heap.before.exit.heap, heap.after.exit.heap, heap.open) / 1024.0],
    ));
    figures.push(Figure::info(
        "memory.fds_per_conn.client",
        "fds per idle conn, client",
        "fds",
        vec![mean(&client_fds)],
    ));
    figures.push(Figure::info(
        "memory.fds_per_conn.exit",
        "fds per idle conn, exit",
        "fds",
        vec![per(before.exit.fds, after.exit.fds, open)],
    ));
    figures.push(Figure::info(
        "memory.rss.exit",
        &format!("RSS of the exit with {open} idle conns"),
        "MiB",
        vec![after.exit.rss as f64 / (1024.0 * 1024.0)],
    ));
    Ok(figures)
}

/// What one node's process holds.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss: u64,
    heap: u64,
    fds: u64,
}

/// The clients' and the exit's usage.
#[derive(Debug)]
struct Snapshot {
    clients: Vec<Usage>,
    exit: Usage,
}

/// `p`'s usage; the heap only from a heap probe (0 otherwise).
fn usage(p: &mut procs::Proc, probe: bool) -> Result<Usage, BenchError> {
    let heap = if probe { p.heap_bytes()? } else { 0 };
    Ok(Usage { rss: p.rss_bytes().unwrap_or(0), heap, fds: p.fds().unwrap_or(0) })
}

fn snapshot(mesh: &mut Mesh, probe: bool) -> Result<Snapshot, BenchError> {
    let mut clients = Vec::new();
    for (c, _) in &mut mesh.clients {
        clients.push(usage(c, probe)?);
    }
    Ok(Snapshot { clients, exit: usage(&mut mesh.exit, probe)? })
}
