import CEchoChatShim
import Glibc

/// A joinable POSIX thread.
public struct ThreadHandle: Sendable {
    let thread: pthread_t

    /// pthread_join(3).
    public func join() {
        pthread_join(thread, nil)
    }
}

public enum Threads {
    /// Gives the CPU to another runnable thread (sched_yield(2)).
    public static func yield() { sched_yield() }

    /// Creates a POSIX thread running `body`. `stackSize` (bytes, rounded up to
    /// PTHREAD_STACK_MIN and the page size) keeps thousands of threads
    /// affordable; nil keeps the system default (8 MiB of address space).
    /// A detached thread's resources return to the system when it ends.
    @discardableResult
    public static func spawn(
        name: String, stackSize: Int? = nil, detached: Bool = false,
        _ body: @escaping @Sendable () -> Void
    ) throws(SystemError) -> ThreadHandle {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        if let stackSize {
            let page = Int(sysconf(Int32(_SC_PAGESIZE)))
            let minimum = Int(PTHREAD_STACK_MIN)
            let rounded = (max(stackSize, minimum) + page - 1) / page * page
            pthread_attr_setstacksize(&attributes, rounded)
        }
        if detached { pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED)) }
        let box = Unmanaged.passRetained(ThreadBody(name: name, body: body)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, &attributes, { raw in
            let box = Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue()
            // Linux limits thread names to 15 bytes plus NUL.
            cechochat_set_thread_name(String(box.name.utf8.prefix(15))!)
            box.body()
            return nil
        }, box)
        if status != 0 {
            Unmanaged<ThreadBody>.fromOpaque(box).release()
            throw SystemError("pthread_create \(name)", Errno(rawValue: status))
        }
        return ThreadHandle(thread: thread)
    }
}

private final class ThreadBody: Sendable {
    let name: String
    let body: @Sendable () -> Void
    init(name: String, body: @escaping @Sendable () -> Void) {
        self.name = name
        self.body = body
    }
}
