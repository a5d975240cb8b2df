import CKernel
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// One thread for a daemon's loop: it runs the loop's task (as that task's executor, see
/// `withTaskExecutorPreference` and `TaskGroup.addTask(executorPreference:)`), the loop's
/// timers and a watch on one descriptor, so that a round or a guest's frame costs the
/// process one wake-up.
///
/// Without it (issue #17's overhead) a round was a timer thread's wake-up, a yield that
/// woke a worker of the cooperative pool for the loop's task, and a hop to the pool and back
/// for every `await` of a backend; a guest's frame was the same through a waker thread.
/// Here the timer fires on the thread the task then runs on, and what the task awaits runs
/// there too (the controller, a default actor, runs on its caller's task executor), one
/// after the other: jobs enqueued from this thread need no wake-up at all.
///
/// Jobs of tasks that prefer this executor may be enqueued from any thread (a stream
/// another thread yields to resumes the loop's task): they wake the thread through a pipe.
public final class DaemonLoop: TaskExecutor, @unchecked Sendable {
    public let name: String
    private let lock = NSLock()
    // Under the lock.
    private var jobs: [UnownedJob] = []
    /// The batch being run (the loop thread's own): swapped with `jobs` under the lock.
    private var spare: [UnownedJob] = []
    private var polling = false
    private var stopped = false
    /// The thread has left its loop: jobs go elsewhere (see ``stop()``).
    private var ended = false
    private var timers: [Timer] = []
    private var nextTimerID = 0
    private var watched: Watch?
    private let pipe = WakePipe()
    private var thread: Thread?
    private var threadID: pthread_t?

    struct Timer {
        let id: Int
        var at: Double
        /// Nil: fires once.
        let period: Double?
        let fire: @Sendable () -> Void
    }

    struct Watch {
        let fd: Int32
        let minGap: Double
        let readable: @Sendable () -> Void
        var armed = true
        var lastFired = -1e9
    }

    public init(name: String) { self.name = name }

    /// Starts the thread; jobs enqueued before run when it starts.
    public func start() {
        let t = Thread { [self] in
            // (What `top -H` and perf show; Foundation's name is not the kernel's.)
            _ = tandem_name_thread(name)
            lock.withLock { threadID = pthread_self() }
            run()
        }
        t.name = name
        lock.withLock { thread = t }
        t.start()
    }

    /// Ends the thread once it has no job left; from then on timers and the watch no longer
    /// fire (one already due may fire once more before the thread sees the stop). Call after
    /// the tasks that prefer it have ended: a job enqueued after the thread ended goes to the
    /// global concurrent executor instead (so a task is never left hanging), which is not
    /// where it preferred to run.
    public func stop() {
        let t = lock.withLock { stopped = true; return thread }
        pipe.wake()
        guard let t, !isCurrent else { return }
        while !t.isFinished { usleep(1000) }
    }

    /// True on the loop's own thread.
    public var isCurrent: Bool {
        lock.withLock { threadID.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
    }

    // MARK: TaskExecutor

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        let (wake, late) = lock.withLock { () -> (Bool, Bool) in
            if ended { return (false, true) }
            jobs.append(unowned)
            return (polling, false)
        }
        if late { globalConcurrentExecutor.enqueue(ExecutorJob(unowned)) }
        if wake { pipe.wake() }
    }

    // MARK: timers and the watch (call from any thread; callbacks run on the loop's thread)

    /// Calls `fire` every `period` seconds, on absolute deadlines of the monotonic clock (no
    /// drift; a late firing is not made up twice). Returns the timer's id, for ``cancel(_:)``.
    @discardableResult
    public func every(_ period: Double, _ fire: @escaping @Sendable () -> Void) -> Int {
        let period = max(period, 0.001)
        return add(Timer(id: 0, at: POSIX.now() + period, period: period, fire: fire))
    }

    /// Calls `fire` once, `seconds` from now.
    @discardableResult
    public func after(_ seconds: Double, _ fire: @escaping @Sendable () -> Void) -> Int {
        add(Timer(id: 0, at: POSIX.now() + max(0, seconds), period: nil, fire: fire))
    }

    public func cancel(_ id: Int) { lock.withLock { timers.removeAll { $0.id == id } } }

    private func add(_ t: Timer) -> Int {
        let id = lock.withLock {
            nextTimerID += 1
            var t = t
            t = Timer(id: nextTimerID, at: t.at, period: t.period, fire: t.fire)
            timers.append(t)
            return nextTimerID
        }
        if !isCurrent { pipe.wake() }
        return id
    }

    /// Calls `readable` when `fd` is readable (level: while it is), at most once per `minGap`
    /// seconds, and not again until ``rearm()`` (the caller's pass has read what it wanted;
    /// what it left must not make the loop spin). One watch; a second replaces it.
    public func watch(_ fd: Int32, minGap: Double, _ readable: @escaping @Sendable () -> Void) {
        lock.withLock { watched = Watch(fd: fd, minGap: minGap, readable: readable) }
        if !isCurrent { pipe.wake() }
    }

    /// After a pass: the watch looks at its descriptor again.
    public func rearm() {
        lock.withLock { watched?.armed = true }
        if !isCurrent { pipe.wake() }
    }

    // MARK: the thread

    private func run() {
        let me = asUnownedTaskExecutor()
        let fds = UnsafeMutablePointer<pollfd>.allocate(capacity: 2)
        defer { fds.deallocate() }
        while true {
            // The jobs there are now (those they enqueue wait for the next turn, so that a
            // task with a backlog cannot hold back the timers and the watch).
            lock.withLock { swap(&jobs, &spare) }
            // (spare is the loop thread's alone between the swaps.)
            for job in spare { job.runSynchronously(on: me) }
            spare.removeAll(keepingCapacity: true)
            // Timers due, each fired outside the lock (it may add timers, yield, enqueue) and
            // only if it is still there: one cancelled by a timer fired before it in the
            // same turn does not fire.
            let now = POSIX.now()
            let due = lock.withLock { timers.filter { $0.at <= now }.map(\.id) }
            for id in due {
                let fire: (@Sendable () -> Void)? = lock.withLock {
                    guard let i = timers.firstIndex(where: { $0.id == id }) else { return nil }
                    let f = timers[i].fire
                    if let p = timers[i].period {
                        timers[i].at += p
                        // Fell behind (a stalled process): start again from now, no burst.
                        if timers[i].at < now { timers[i].at = now + p }
                    } else {
                        timers.remove(at: i)
                    }
                    return f
                }
                fire?()
            }
            // Sleep until the next timer, a readable watch (once its gap is over), or a job.
            var watchFD: Int32 = -1
            let timeout: Double? = lock.withLock {
                if stopped || !jobs.isEmpty { return nil }
                var wakeAt = timers.map(\.at).min() ?? .infinity
                if let w = watched, w.armed {
                    let open = w.lastFired + w.minGap
                    if open <= now { watchFD = w.fd } else { wakeAt = min(wakeAt, open) }
                }
                polling = true
                return wakeAt - now
            }
            guard let timeout else {
                if lock.withLock({ stopped && jobs.isEmpty }) { break }
                continue
            }
            let ms: Int32 = timeout.isInfinite ? -1 : Int32(min((max(0, timeout) * 1000).rounded(.up), 3_600_000))
            // (Into a buffer kept for the thread's life: no arrays made per wake-up.)
            fds[0] = pollfd(fd: pipe.readFD, events: Int16(POLLIN), revents: 0)
            fds[1] = pollfd(fd: watchFD, events: Int16(POLLIN), revents: 0)
            while Glibc.poll(fds, watchFD >= 0 ? 2 : 1, ms) < 0 && errno == EINTR {}
            lock.withLock { polling = false }
            if fds[0].revents != 0 { pipe.drain() }
            if watchFD >= 0, fds[1].revents != 0 {
                let fire: (@Sendable () -> Void)? = lock.withLock {
                    guard var w = watched, w.fd == watchFD, w.armed else { return nil }
                    w.armed = false
                    w.lastFired = POSIX.now()
                    watched = w
                    return w.readable
                }
                fire?()
            }
        }
        // Anything enqueued between the last turn and here still runs somewhere.
        let left: [UnownedJob] = lock.withLock { ended = true; threadID = nil; defer { jobs = [] }; return jobs }
        for job in left { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }
}
