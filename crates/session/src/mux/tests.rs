use super::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pair() -> (
    (MuxHandle, mpsc::UnboundedReceiver<MuxStream>),
    (MuxHandle, mpsc::UnboundedReceiver<MuxStream>),
) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    (spawn(a, Side::Client), spawn(b, Side::Agent))
}

#[tokio::test]
async fn streams_both_ways_and_close_ends_them() {
    let ((client, _in_c), (agent, mut in_a)) = pair();
    let mut s = client.open().await.unwrap();
    s.write_all(b"ping").await.unwrap();
    s.flush().await.unwrap();
    let mut t = in_a.recv().await.unwrap();
    let mut buf = [0u8; 4];
    t.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    t.write_all(b"pong").await.unwrap();
    t.flush().await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    agent.close();
    client.closed().await;
    assert!(client.open().await.is_err());
    assert_eq!(s.read(&mut buf).await.unwrap(), 0);
    assert!(s.write_all(b"x").await.is_err());
    assert!(client.close_reason().unwrap().contains("closed"));
}

#[tokio::test]
async fn streams_flushing_in_one_tick_share_one_carrier_write() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (logged, log) = crate::testio::Logged::new(a);
    let writes = || log.lock().unwrap().len();
    let (client, _in_c) = spawn(logged, Side::Client);
    let (_agent, mut in_a) = spawn(b, Side::Agent);
    // The preface and a first stream, so the carrier is idle afterwards.
    let mut first = client.open().await.unwrap();
    first.write_all(b"0").await.unwrap();
    first.flush().await.unwrap();
    let mut t = in_a.recv().await.unwrap();
    t.read_exact(&mut [0u8; 1]).await.unwrap();
    let before = writes();
    // Eight streams become ready together (as after one batch of socket events) and
    // each writes, flushes and half-closes.
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut s = client.open().await.unwrap();
                s.write_all(&[i]).await.unwrap();
                s.flush().await.unwrap();
                s.shutdown().await.unwrap();
                s
            })
        })
        .collect();
    // Held until the end: dropping a stream whose peer has not closed sends RST.
    let mut streams = Vec::new();
    for t in tasks {
        streams.push(t.await.unwrap());
    }
    let mut got = Vec::new();
    for _ in 0..8 {
        let mut t = in_a.recv().await.unwrap();
        let mut v = Vec::new();
        t.read_to_end(&mut v).await.unwrap();
        got.extend(v);
    }
    got.sort();
    assert_eq!(got, (0..8u8).collect::<Vec<_>>());
    assert_eq!(writes() - before, 1, "one write for all eight streams");
}

#[tokio::test]
async fn bulk_beyond_the_window_with_many_streams_and_half_close() {
    let ((client, _in_c), (_agent, mut in_a)) = pair();
    // An echo server on the agent side.
    tokio::spawn(async move {
        while let Some(mut t) = in_a.recv().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                t.read_to_end(&mut got).await.unwrap();
                t.write_all(&got).await.unwrap();
                t.shutdown().await.unwrap();
            });
        }
    });
    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let size = if i == 0 { 5_000_000 } else { 1000 * i as usize };
            let data: Vec<u8> = (0..size).map(|k| (k as u32 ^ i) as u8).collect();
            let s = client.open().await.unwrap();
            let (mut rd, mut wr) = tokio::io::split(s);
            let sent = data.clone();
            let w = tokio::spawn(async move {
                wr.write_all(&sent).await.unwrap();
                wr.shutdown().await.unwrap();
                wr
            });
            let mut back = Vec::new();
            rd.read_to_end(&mut back).await.unwrap();
            let _ = w.await.unwrap();
            assert_eq!(back, data, "stream {i}");
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_writers_waiting_for_room_all_finish() {
    let ((client, _in_c), (_agent, mut in_a)) = pair();
    // A sink on the agent side that reads every stream to its end.
    let sink = tokio::spawn(async move {
        let mut readers = Vec::new();
        while let Some(mut t) = in_a.recv().await {
            readers.push(tokio::spawn(async move {
                let mut n = 0usize;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match t.read(&mut buf).await.unwrap() {
                        0 => return n,
                        m => n += m,
                    }
                }
            }));
            if readers.len() == 300 {
                break;
            }
        }
        let mut total = 0;
        for r in readers {
            total += r.await.unwrap();
        }
        total
    });
    // 300 writers of 600 KiB each: more than the buffer and their first window, so
    // they wait for room and for credit, over and over.
    let mut writers = Vec::new();
    for i in 0..300u32 {
        let mut s = client.open().await.unwrap();
        writers.push(tokio::spawn(async move {
            let data = vec![i as u8; 600 * 1024];
            s.write_all(&data).await.unwrap();
            s.shutdown().await.unwrap();
            s
        }));
    }
    let mut keep = Vec::new();
    for w in writers {
        keep.push(
            tokio::time::timeout(Duration::from_secs(60), w)
                .await
                .expect("a writer never got room")
                .unwrap(),
        );
    }
    let total = tokio::time::timeout(Duration::from_secs(60), sink)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(total, 300 * 600 * 1024);
    assert!(lock(&client.shared.out).ready.is_empty());
}

/// Writes from new streams, without yielding (the driver does not run meanwhile), until
/// the carrier is busy: its socket is full and a stream's bytes wait for their turn.
fn congest(client: &MuxHandle) -> Vec<MuxStream> {
    let chunk = vec![7u8; INITIAL_WINDOW as usize];
    let (_, noop) = flag();
    let mut bulk = Vec::new();
    loop {
        let mut s = client.open_now().unwrap();
        let r = Pin::new(&mut s).poll_write(&mut Context::from_waker(&noop), &chunk);
        assert!(matches!(r, Poll::Ready(Ok(_))), "{r:?}");
        let held = Out::holds(&s.cell);
        bulk.push(s);
        if held {
            return bulk;
        }
    }
}

/// A waker that records that it was woken.
struct Flag(std::sync::atomic::AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn flag() -> (Arc<Flag>, Waker) {
    let f = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
    (f.clone(), Waker::from(f))
}

#[tokio::test]
async fn a_stream_polled_from_two_tasks_wakes_the_one_that_polled_last() {
    // A carrier nested in a stream of another carrier (expose through the agent) writes
    // that stream from its driver and from its writers: whichever task polled last
    // must be woken when there is room, or the nested carrier stalls.
    let (a, mut far) = tokio::io::duplex(64 * 1024);
    let (client, _in_c) = spawn(a, Side::Client);
    let (_, noop) = flag();
    let _bulk = congest(&client);
    let mut nested = client.open_now().unwrap();
    // The carrier is busy: the stream's bytes wait for their turn, up to HELD of them.
    let held = vec![1u8; HELD];
    let r = Pin::new(&mut nested).poll_write(&mut Context::from_waker(&noop), &held);
    assert!(matches!(r, Poll::Ready(Ok(HELD))), "{r:?}");
    let (first, w1) = flag();
    let (last, w2) = flag();
    for w in [&w1, &w2] {
        let r = Pin::new(&mut nested).poll_write(&mut Context::from_waker(w), b"x");
        assert!(r.is_pending(), "the stream holds all it may");
    }
    // The far end reads: the buffer drains and the waiting stream gets its turn.
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while far.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while !last.0.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the task that polled last was never woken");
    let _ = first;
    let r = Pin::new(&mut nested).poll_write(&mut Context::from_waker(&w2), b"x");
    assert!(matches!(r, Poll::Ready(Ok(1))), "{r:?}");
}

/// Bytes of each writer the carrier took (written and no longer held for a turn) in the
/// steady state, from a quarter of everything sent to three quarters (the last writers
/// spawned start late), through a slow carrier (a 16 KiB pipe). Writer `i` writes 8 MiB
/// in writes of at most `chunks[i]` bytes. Counted at the sender: what the receiving
/// tasks have read also depends on how often each of them ran, within its window.
async fn shares(chunks: &[usize]) -> Vec<u64> {
    const EACH: usize = 8 * 1024 * 1024;
    let writers = chunks.len();
    let (a, b) = tokio::io::duplex(16 * 1024);
    let ((client, _in_c), (_agent, mut in_a)) = (spawn(a, Side::Client), spawn(b, Side::Agent));
    tokio::spawn(async move {
        while let Some(t) = in_a.recv().await {
            bulk_sink(t);
        }
    });
    let written: Arc<Vec<AtomicU64>> = Arc::new((0..writers).map(|_| AtomicU64::new(0)).collect());
    let mut keep = Vec::new();
    let mut cells = Vec::new();
    for (i, &chunk) in chunks.iter().enumerate() {
        let mut s = client.open().await.unwrap();
        cells.push(s.cell.clone());
        let written = written.clone();
        keep.push(tokio::spawn(async move {
            let data = vec![i as u8; chunk];
            let mut left = EACH;
            while left > 0 {
                match s.write(&data[..chunk.min(left)]).await {
                    Ok(n) => {
                        written[i].fetch_add(n as u64, Ordering::Relaxed);
                        left -= n;
                    }
                    Err(_) => break,
                }
            }
            s
        }));
    }
    let taken = || -> Vec<u64> {
        cells
            .iter()
            .zip(written.iter())
            .map(|(c, w)| w.load(Ordering::Relaxed) - lock(&c.held).len as u64)
            .collect()
    };
    let at = |fraction: usize| async move {
        tokio::time::timeout(Duration::from_secs(60), async {
            while taken().iter().sum::<u64>() < (writers * EACH * fraction / 4) as u64 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the writers stalled");
        taken()
    };
    let start = at(1).await;
    let end = at(3).await;
    for k in keep {
        k.abort();
    }
    end.iter().zip(&start).map(|(e, s)| e - s).collect()
}

/// `got`'s largest share is at most 1.25 times its smallest.
fn assert_fair(got: &[u64]) {
    let (min, max) = (*got.iter().min().unwrap(), *got.iter().max().unwrap());
    assert!(min * 5 >= max * 4, "unfair shares of the carrier: {got:?}");
}

// One thread: a worker thread the OS preempts on a busy machine would skew the shares.
#[tokio::test]
async fn streams_waiting_for_room_share_it_evenly() {
    // 8 writers that always have data: each gets its share, none starves.
    assert_fair(&shares(&[MAX_PAYLOAD; 8]).await);
}

// One thread: a worker thread the OS preempts on a busy machine would skew the shares.
#[tokio::test]
async fn small_writes_get_as_many_bytes_as_big_ones() {
    // A relay whose buffer has not grown writes 2 KiB at a time, a bulk one 256 KiB:
    // turns are counted in bytes, not in writes or frames.
    let got = shares(&[
        2048,
        2048,
        2048,
        2048,
        MAX_PAYLOAD,
        MAX_PAYLOAD,
        MAX_PAYLOAD,
        MAX_PAYLOAD,
    ])
    .await;
    assert_fair(&got);
}

#[tokio::test]
async fn streams_may_start_in_any_order() {
    let ((client, _in_c), (_agent, mut in_a)) = pair();
    let mut first = client.open().await.unwrap();
    let mut second = client.open().await.unwrap();
    second.write_all(b"2").await.unwrap();
    second.flush().await.unwrap();
    first.write_all(b"1").await.unwrap();
    first.flush().await.unwrap();
    let mut buf = [0u8; 1];
    for want in [b"2", b"1"] {
        let mut t = in_a.recv().await.unwrap();
        t.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, want);
    }
    assert!(!client.is_closed());
}

#[tokio::test]
async fn dropping_a_stream_resets_it_after_its_data() {
    let ((client, _in_c), (_agent, mut in_a)) = pair();
    let mut s = client.open().await.unwrap();
    s.write_all(b"last words").await.unwrap();
    drop(s);
    let mut t = in_a.recv().await.unwrap();
    let mut buf = [0u8; 10];
    t.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"last words");
    let e = t.read(&mut buf).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(
        t.write_all(b"x").await.unwrap_err().kind(),
        io::ErrorKind::ConnectionReset
    );
}

#[tokio::test]
async fn a_slow_reader_holds_at_most_its_window() {
    let ((client, _in_c), (_agent, mut in_a)) = pair();
    let mut s = client.open().await.unwrap();
    let big = vec![1u8; 4 * INITIAL_WINDOW as usize];
    let sent = tokio::time::timeout(Duration::from_millis(300), s.write_all(&big)).await;
    assert!(sent.is_err(), "the writer must wait for credit");
    let t = in_a.recv().await.unwrap();
    let queued: usize = lock(&t.cell.state).queue.iter().map(Bytes::len).sum();
    assert_eq!(queued, INITIAL_WINDOW as usize);
}

#[tokio::test]
async fn the_control_stream_is_not_held_behind_bulk_data() {
    // Nobody reads the carrier: its output buffer fills up to the high water mark.
    let (a, _unread) = tokio::io::duplex(64 * 1024);
    let (client, _in_c) = spawn(a, Side::Client);
    let mut control = client.open().await.unwrap();
    control.set_urgent();
    let chunk = vec![7u8; INITIAL_WINDOW as usize];
    let mut bulk = Vec::new();
    for _ in 0..(HIGH_WATER / INITIAL_WINDOW as usize + 2) {
        let mut s = client.open().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(50), s.write_all(&chunk)).await;
        bulk.push(s);
    }
    {
        let out = lock(&client.shared.out);
        assert!(out.buf.len() >= HIGH_WATER || !out.ready.is_empty());
    }
    // Another bulk stream's byte waits for its turn; the control stream's ping goes into
    // the carrier's buffer at once.
    let mut late = client.open().await.unwrap();
    late.write_all(b"x").await.unwrap();
    assert!(
        Out::holds(&late.cell),
        "a bulk write must wait for its turn"
    );
    let ping = tokio::time::timeout(Duration::from_millis(100), control.write_all(b"ping")).await;
    assert!(ping.is_ok(), "the control stream waited behind bulk data");
    assert!(
        lock(&client.shared.out).buf.ends_with(b"ping"),
        "the ping is not in the carrier's buffer"
    );
}

#[tokio::test]
async fn any_bytes_from_the_peer_count_as_signs_of_life() {
    let ((client, _in_c), (agent, mut in_a)) = pair();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client.quiet_for() >= Duration::from_millis(250));
    // Data of some stream (not a pong) arrives: the carrier is not quiet any more.
    let mut s = client.open().await.unwrap();
    s.write_all(b"hi").await.unwrap();
    s.flush().await.unwrap();
    let mut t = in_a.recv().await.unwrap();
    let mut buf = [0u8; 2];
    t.read_exact(&mut buf).await.unwrap();
    assert!(agent.quiet_for() < Duration::from_millis(100));
    t.write_all(b"yo").await.unwrap();
    t.flush().await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
    assert!(client.quiet_for() < Duration::from_millis(100));
}

#[tokio::test]
async fn garbage_and_wrong_preface_close_the_carrier() {
    let (a, mut b) = tokio::io::duplex(1024);
    let (agent, mut inbound) = spawn(a, Side::Agent);
    // A yamux client: version 0, then a SYN for stream 1.
    b.write_all(&[0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])
        .await
        .unwrap();
    agent.closed().await;
    assert!(inbound.recv().await.is_none());
    assert!(agent.close_reason().unwrap().contains("preface"));

    let (a, mut b) = tokio::io::duplex(1024);
    let (agent, _inbound) = spawn(a, Side::Agent);
    b.write_all(&PREFACE).await.unwrap();
    let mut frame = BytesMut::new();
    wire::put_header(&mut frame, MuxKind::Data, SYN, 1, 1 << 30);
    b.write_all(&frame).await.unwrap();
    agent.closed().await;
    assert!(agent.close_reason().unwrap().contains("exceeds"));
}

#[tokio::test]
async fn a_peer_ignoring_flow_control_is_cut_off() {
    let (a, mut b) = tokio::io::duplex(4 << 20);
    let (agent, _inbound) = spawn(a, Side::Agent);
    let mut wire_bytes = BytesMut::from(&PREFACE[..]);
    let chunk = vec![0u8; MAX_PAYLOAD];
    for i in 0..2 {
        let flags = if i == 0 { SYN } else { 0 };
        wire::put_header(&mut wire_bytes, MuxKind::Data, flags, 1, chunk.len() as u32);
        wire_bytes.extend_from_slice(&chunk);
    }
    b.write_all(&wire_bytes).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), agent.closed())
        .await
        .unwrap();
    assert!(agent.close_reason().unwrap().contains("granted"));
}

#[tokio::test]
async fn held_bytes_keep_their_order_with_fin_and_reset() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let ((client, _in_c), (_agent, mut in_a)) = (spawn(a, Side::Client), spawn(b, Side::Agent));
    let (_, noop) = flag();
    let mut cx = Context::from_waker(&noop);
    let _bulk = congest(&client);
    // Two streams start while the carrier is busy: their bytes and ends wait their turn.
    let mut ended = client.open_now().unwrap();
    assert!(matches!(
        Pin::new(&mut ended).poll_write(&mut cx, b"abc"),
        Poll::Ready(Ok(3))
    ));
    assert!(Pin::new(&mut ended).poll_shutdown(&mut cx).is_ready());
    let mut dropped = client.open_now().unwrap();
    assert!(matches!(
        Pin::new(&mut dropped).poll_write(&mut cx, b"xyz"),
        Poll::Ready(Ok(3))
    ));
    assert!(Out::holds(&ended.cell) && Out::holds(&dropped.cell));
    let (ended_id, dropped_id) = (ended.cell.id, dropped.cell.id);
    drop(dropped);
    let mut seen = 0;
    while seen < 2 {
        let mut t = tokio::time::timeout(Duration::from_secs(10), in_a.recv())
            .await
            .expect("the held streams never arrived")
            .unwrap();
        let mut buf = [0u8; 3];
        if t.cell.id == ended_id {
            t.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"abc");
            assert_eq!(t.read(&mut buf).await.unwrap(), 0, "FIN after the data");
            seen += 1;
        } else if t.cell.id == dropped_id {
            t.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"xyz");
            let e = t.read(&mut buf).await.unwrap_err();
            assert_eq!(
                e.kind(),
                io::ErrorKind::ConnectionReset,
                "RST after the data"
            );
            seen += 1;
        } else {
            bulk_sink(t);
        }
    }
    assert!(lock(&client.shared.out).ready.is_empty());
    drop(ended);
}

#[tokio::test]
async fn a_busy_carrier_takes_a_write_whole_and_sends_its_chunks_in_order() {
    // Held chunks go out as slices of vectored writes, cut anywhere by a full pipe.
    let (a, b) = tokio::io::duplex(64 * 1024);
    held_chunks_arrive_whole(a, b).await;
}

#[tokio::test]
async fn a_carrier_without_vectored_writes_gets_held_chunks_in_one_buffer() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    held_chunks_arrive_whole(OneSlice(a), b).await;
}

/// A carrier that writes one slice at a time (tokio's default `poll_write_vectored`).
struct OneSlice<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for OneSlice<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for OneSlice<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A stream that starts on a busy carrier writes 3/4 HELD, then HELD (taken whole), then
/// must wait; everything arrives, in order, with its FIN.
async fn held_chunks_arrive_whole<A, B>(a: A, b: B)
where
    A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ((client, _in_c), (_agent, mut in_a)) = (spawn(a, Side::Client), spawn(b, Side::Agent));
    let (_, noop) = flag();
    let mut cx = Context::from_waker(&noop);
    let _bulk = congest(&client);
    let mut s = client.open_now().unwrap();
    let first: Vec<u8> = (0..HELD * 3 / 4).map(|i| (i % 251) as u8).collect();
    let second: Vec<u8> = (0..HELD).map(|i| (i % 241) as u8).collect();
    let r = Pin::new(&mut s).poll_write(&mut cx, &first);
    assert!(matches!(r, Poll::Ready(Ok(n)) if n == first.len()), "{r:?}");
    // A quarter of HELD is left, and the next write is still taken whole: a flow frame
    // cut to the room left would have its rest copied aside by the writer.
    let r = Pin::new(&mut s).poll_write(&mut cx, &second);
    assert!(matches!(r, Poll::Ready(Ok(n)) if n == HELD), "{r:?}");
    // Beyond HELD the writer waits for its turns.
    assert!(Pin::new(&mut s).poll_write(&mut cx, b"x").is_pending());
    assert!(Pin::new(&mut s).poll_shutdown(&mut cx).is_ready());
    let got = read_inbound(&mut in_a, s.cell.id).await;
    assert_eq!(got.len(), first.len() + second.len());
    assert!(got[..first.len()] == first[..] && got[first.len()..] == second[..]);
    drop(s);
}

/// Reads the inbound stream `id` to its end; the others that arrive before it are read
/// in the background.
async fn read_inbound(inbound: &mut mpsc::UnboundedReceiver<MuxStream>, id: u32) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut t = inbound.recv().await.unwrap();
            if t.cell.id == id {
                let mut got = Vec::new();
                t.read_to_end(&mut got).await.unwrap();
                return got;
            }
            bulk_sink(t);
        }
    })
    .await
    .expect("the stream never arrived")
}

/// Reads a stream to its end in the background.
fn bulk_sink(mut t: MuxStream) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while t.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
}

#[tokio::test]
async fn a_vectored_write_is_one_frame_on_the_wire() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (logged, log) = crate::testio::Logged::new(a);
    let (client, _in_c) = spawn(logged, Side::Client);
    let (_agent, mut in_a) = spawn(b, Side::Agent);
    let mut s = client.open().await.unwrap();
    assert!(s.is_write_vectored());
    let slices = [
        IoSlice::new(b"head"),
        IoSlice::new(b""),
        IoSlice::new(b"body and more"),
    ];
    let n = std::future::poll_fn(|cx| Pin::new(&mut s).poll_write_vectored(cx, &slices))
        .await
        .unwrap();
    assert_eq!(n, 17, "all slices taken");
    s.flush().await.unwrap();
    let mut t = in_a.recv().await.unwrap();
    let mut got = [0u8; 17];
    t.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"headbody and more");
    // On the wire (after the preface): one Data frame with all 17 bytes.
    let mut wire = BytesMut::new();
    for call in log.lock().unwrap().iter() {
        if let crate::testio::Call::Write(w) = call {
            wire.extend_from_slice(w);
        }
    }
    assert!(wire::take_preface(&mut wire).unwrap());
    match wire::decode(&mut wire).unwrap() {
        Some(MuxFrame::Data { payload, .. }) => assert_eq!(&payload[..], b"headbody and more"),
        other => panic!("expected one Data frame, got {other:?}"),
    }
    assert!(wire.is_empty(), "{} more bytes", wire.len());
}

/// Counts its wakes.
struct CountWakes(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Waits (at most 5 s) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 5 s: {what}");
}

/// A reader waiting for the rest of a frame is woken once it is all there, not for every
/// piece; a mark beyond what the peer may send is capped (no deadlock), and the end of the
/// stream wakes it whatever is queued.
#[tokio::test]
async fn a_reader_is_woken_at_its_low_water_mark() {
    let ((client, _in_c), (_agent, mut in_a)) = pair();
    let mut s = client.open().await.unwrap();
    s.write_all(b"x").await.unwrap();
    s.flush().await.unwrap();
    let mut t = in_a.recv().await.unwrap();
    t.read_exact(&mut [0u8; 1]).await.unwrap();
    let count = Arc::new(CountWakes(Default::default()));
    let waker = Waker::from(count.clone());
    let mut cx = Context::from_waker(&waker);
    let wakes = || count.0.load(Ordering::SeqCst);
    let queued = |t: &MuxStream| lock(&t.cell.state).queued;
    let drain = |t: &mut MuxStream, cx: &mut Context<'_>, want: usize| {
        let mut got = 0;
        while got < want {
            match t.poll_read_chunk(cx, usize::MAX) {
                Poll::Ready(Ok(p)) if !p.is_empty() => got += p.len(),
                other => panic!("{got} of {want} bytes, then {other:?}"),
            }
        }
    };

    t.set_read_lowat(1000);
    assert!(t.poll_read_chunk(&mut cx, usize::MAX).is_pending());
    s.write_all(&[1u8; 600]).await.unwrap();
    s.flush().await.unwrap();
    until("600 bytes queued", || queued(&t) == 600).await;
    assert_eq!(wakes(), 0, "woken for part of what it waits for");
    s.write_all(&[2u8; 400]).await.unwrap();
    s.flush().await.unwrap();
    until("woken at 1000 bytes", || wakes() == 1).await;
    drain(&mut t, &mut cx, 1000);

    // Beyond a quarter of the window: woken at the quarter.
    t.set_read_lowat(usize::MAX);
    assert!(t.poll_read_chunk(&mut cx, usize::MAX).is_pending());
    s.write_all(&vec![3u8; INITIAL_WINDOW as usize / 4])
        .await
        .unwrap();
    s.flush().await.unwrap();
    until("woken at a quarter of the window", || wakes() == 2).await;
    drain(&mut t, &mut cx, INITIAL_WINDOW as usize / 4);

    t.set_read_lowat(1000);
    assert!(t.poll_read_chunk(&mut cx, usize::MAX).is_pending());
    s.write_all(b"end").await.unwrap();
    s.shutdown().await.unwrap();
    until("woken by the end", || wakes() == 3).await;
    drain(&mut t, &mut cx, 3);
    assert!(matches!(t.poll_read_chunk(&mut cx, usize::MAX), Poll::Ready(Ok(p)) if p.is_empty()));
}

/// On a busy carrier a body given away is held as it is: only the head is copied.
/// Uncontended, it goes into the carrier's buffer like any write.
#[tokio::test]
async fn a_busy_carrier_holds_an_owned_body_without_copying_it() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let ((client, _in_c), (_agent, mut in_a)) = (spawn(a, Side::Client), spawn(b, Side::Agent));
    let (_, noop) = flag();
    let mut cx = Context::from_waker(&noop);
    let _bulk = congest(&client);
    let mut s = client.open_now().unwrap();
    let body: Vec<u8> = (0..HELD / 2).map(|i| (i % 251) as u8).collect();
    let mut owned = Bytes::from(body.clone());
    let at = owned.as_ptr();
    let r = s.poll_write_owned(&mut cx, b"head", &mut owned);
    assert!(
        matches!(r, Poll::Ready(Ok(n)) if n == 4 + body.len()),
        "{r:?}"
    );
    assert!(owned.is_empty(), "the body was taken");
    {
        let held = lock(&s.cell.held);
        assert_eq!(held.len, 4 + body.len());
        assert_eq!(&held.chunks[0][..], b"head");
        assert_eq!(held.chunks[1].as_ptr(), at, "held as given, not copied");
    }
    assert!(Pin::new(&mut s).poll_shutdown(&mut cx).is_ready());
    let got = read_inbound(&mut in_a, s.cell.id).await;
    assert_eq!(&got[..4], b"head");
    assert!(got[4..] == body[..]);
    drop(s);
}

/// With room for part of the body only (little credit), the part is taken and the rest
/// stays with the writer.
#[tokio::test]
async fn an_owned_write_takes_what_credit_allows() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let ((client, _in_c), (_agent, _in_a)) = (spawn(a, Side::Client), spawn(b, Side::Agent));
    let (_, noop) = flag();
    let mut cx = Context::from_waker(&noop);
    let mut s = client.open_now().unwrap();
    lock(&s.cell.state).send_credit = 10;
    let mut owned = Bytes::from_static(b"0123456789abcdef");
    let r = s.poll_write_owned(&mut cx, b"head", &mut owned);
    assert!(matches!(r, Poll::Ready(Ok(10))), "{r:?}");
    assert_eq!(&owned[..], b"6789abcdef");
}

/// With megabytes waiting in the carrier, the driver reads one turn, then lets the other
/// tasks run (the streams' readers, new flows) before it reads on.
#[tokio::test(flavor = "current_thread")]
async fn the_driver_yields_after_reading_its_turn() {
    let (a, b) = tokio::io::duplex(8 << 20);
    let (client, _in_c) = spawn(a, Side::Client);
    // Eight streams send a whole first window each: 2 MiB of frames wait in the pipe.
    let mut streams = Vec::new();
    for _ in 0..8 {
        let mut s = client.open().await.unwrap();
        s.write_all(&vec![1; INITIAL_WINDOW as usize])
            .await
            .unwrap();
        s.flush().await.unwrap();
        streams.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (counted, _log) = crate::testio::Logged::new(b);
    let read = counted.bytes_read();
    let (_agent, mut in_a) = spawn(counted, Side::Agent);
    // Spawned after the agent's driver, so it runs after the driver's first poll.
    let seen = tokio::spawn({
        let read = read.clone();
        async move { read.load(Ordering::Relaxed) }
    })
    .await
    .unwrap();
    assert!(seen > 0, "the driver had not run first");
    assert!(
        READ_TURN + READ_CHUNK < 8 * INITIAL_WINDOW as usize,
        "a turn must be less than what waits"
    );
    assert!(
        seen <= READ_TURN + READ_CHUNK,
        "the driver read {seen} bytes before anything else ran"
    );
    // And it reads on: every stream arrives whole.
    for _ in 0..8 {
        let mut t = in_a.recv().await.unwrap();
        let mut got = vec![0u8; INITIAL_WINDOW as usize];
        t.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|&x| x == 1));
    }
}

/// Sends `n` bytes from `w` and reads them all from `r`.
async fn pump(w: &mut MuxStream, r: &mut MuxStream, n: usize) {
    let data = vec![7u8; n];
    let mut got = vec![0u8; n];
    let send = async {
        w.write_all(&data).await?;
        w.flush().await
    };
    let (sent, read) = tokio::join!(send, r.read_exact(&mut got));
    sent.unwrap();
    read.unwrap();
}

/// A stream opened by `client` and its other end, with one byte through.
async fn opened(
    client: &MuxHandle,
    inbound: &mut mpsc::UnboundedReceiver<MuxStream>,
) -> (MuxStream, MuxStream) {
    let mut w = client.open().await.unwrap();
    w.write_all(b"x").await.unwrap();
    w.flush().await.unwrap();
    let mut r = inbound.recv().await.unwrap();
    let mut one = [0u8; 1];
    r.read_exact(&mut one).await.unwrap();
    (w, r)
}

fn window(s: &MuxStream) -> usize {
    lock(&s.cell.state).window as usize
}

#[tokio::test]
async fn windows_grow_within_the_carriers_budget_and_give_back_beyond_it() {
    let budget = 2 * 1024 * 1024;
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (client, _in_c) = spawn(a, Side::Client);
    let (agent, mut in_a) = spawn_with_budget(b, Side::Agent, budget);
    let committed = || agent.shared.committed.load(Ordering::Relaxed);
    // Two bulk streams: without the budget each would double to 4 MiB and beyond.
    let mut pairs = Vec::new();
    for _ in 0..2 {
        pairs.push(opened(&client, &mut in_a).await);
    }
    for _ in 0..4 {
        for (w, r) in &mut pairs {
            pump(w, r, 2 * 1024 * 1024).await;
        }
    }
    let windows: Vec<usize> = pairs.iter().map(|(_, r)| window(r)).collect();
    assert!(
        windows.iter().all(|&w| w > INITIAL_WINDOW as usize),
        "they grew: {windows:?}"
    );
    assert_eq!(committed(), windows.iter().sum::<usize>());
    assert!(committed() <= budget, "{} over {budget}", committed());

    // Eight more streams take the carrier beyond the budget: the grown windows give back
    // half at their next credit, down to the floor.
    let mut more = Vec::new();
    for _ in 0..8 {
        more.push(opened(&client, &mut in_a).await);
    }
    assert!(committed() > budget);
    for _ in 0..4 {
        for (w, r) in &mut pairs {
            pump(w, r, 512 * 1024).await;
        }
    }
    for (_, r) in &pairs {
        assert_eq!(window(r), MIN_WINDOW as usize);
    }
    // Still moving data at the floor.
    let (w, r) = &mut pairs[0];
    pump(w, r, 1024 * 1024).await;
    let sum: usize = pairs.iter().chain(&more).map(|(_, r)| window(r)).sum();
    assert_eq!(committed(), sum);

    // Gone with their streams.
    drop(pairs);
    drop(more);
    assert_eq!(committed(), 0);
}
