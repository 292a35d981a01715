import EchoChatPOSIX

/// A task executor whose jobs run on one thread, the reactor's, between its
/// epoll waits: asyncio's event loop as a Swift `TaskExecutor`.
///
/// A job enqueued on the reactor thread (nearly all of them: a continuation
/// the reactor resumes, a child task the accept task adds, a parent woken by
/// its group) goes on a plain array, no lock. One enqueued on any other
/// thread (a continuation resumed elsewhere) goes on a locked list and rings
/// the reactor's eventfd; the reactor moves it over when it wakes
/// (`takeRemoteJobs`).
///
/// @unchecked Sendable: `jobs` and `running` belong to the reactor thread
/// (asserted in debug builds); `remote` is behind its lock.
final class ReactorExecutor: TaskExecutor, @unchecked Sendable {
    private let owner: OwnerThread
    private let wakeup: Wakeup
    private var jobs: [UnownedJob] = []
    private var running: [UnownedJob] = []
    private let remote = Lock<[UnownedJob]>([])

    /// The calling thread becomes the reactor thread; `wakeup` is the eventfd it polls.
    init(wakeup: Wakeup) {
        owner = OwnerThread()
        self.wakeup = wakeup
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if owner.isCurrent {
            jobs.append(job)
        } else {
            remote.withLock { $0.append(job) }
            wakeup.ring()
        }
    }

    /// Jobs wait to run: the reactor polls without waiting.
    var hasJobs: Bool { !jobs.isEmpty }

    /// After the eventfd rang: the jobs other threads enqueued join the queue.
    func takeRemoteJobs() {
        owner.assertCurrent()
        let taken = remote.withLock { list in
            defer { list.removeAll() }
            return list
        }
        jobs.append(contentsOf: taken)
    }

    /// Runs the jobs queued so far, in order, each until its task next
    /// suspends or ends. Jobs they enqueue wait for the next call.
    func runJobs() {
        owner.assertCurrent()
        swap(&jobs, &running)
        let executor = asUnownedTaskExecutor()
        for job in running { job.runSynchronously(on: executor) }
        running.removeAll(keepingCapacity: true)
    }
}
