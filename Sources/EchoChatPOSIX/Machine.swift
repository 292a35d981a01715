import CEchoChatShim
import Glibc

// What this machine is: how many CPUs (online, and ours to use), the clock
// tick, the kernel. Thread counts and benchmark reports come from here.

extension Threads {
    /// CPUs this process may run on (sched_getaffinity(2)): under `taskset -c 0`
    /// this is 1 even on a bigger machine, which is what sizing threads needs.
    public static var availableCores: Int {
        let count = Int(cechochat_available_cpus())
        return count > 0 ? count : System.onlineCores
    }

    /// The CPUs this process may run on, ascending (sched_getaffinity(2)).
    public static var affinity: [Int] {
        var cpus = [Int32](repeating: 0, count: 1024)
        let count = Int(cechochat_affinity_cpus(&cpus, Int32(cpus.count)))
        return count > 0 ? cpus[..<count].map(Int.init) : Array(0..<System.onlineCores)
    }
}

extension System {
    /// CPUs online (sysconf(3)), whatever this process's affinity mask says.
    public static var onlineCores: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// Clock ticks per second, the unit of the CPU times in /proc/PID/stat.
    public static var clockTicksPerSecond: Int { Int(sysconf(Int32(_SC_CLK_TCK))) }

    /// uname(2): kernel name, release and machine, e.g. "Linux 6.1.0 x86_64".
    public static var kernelDescription: String {
        var names = utsname()
        uname(&names)
        func text<T>(_ field: T) -> String {
            withUnsafeBytes(of: field) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
        }
        return "\(text(names.sysname)) \(text(names.release)) \(text(names.machine))"
    }
}
