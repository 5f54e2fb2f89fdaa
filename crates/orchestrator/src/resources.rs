//! What the machine offers replicas, and whether one more fits.

use neocloud_api::ResourceRequests;
use neocloud_api::resource::quantity;

/// The machine's resources available to replicas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// CPU cores.
    pub cpu: f64,
    /// Bytes of memory.
    pub memory: u64,
    /// Whole GPUs.
    pub gpus: u32,
}

impl Capacity {
    /// This machine: its cores, its physical memory, and its GPUs
    /// ([`detect_gpus`], unless `gpus` overrides it).
    pub fn detect(gpus: Option<u32>) -> Capacity {
        let cpu = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        Capacity {
            cpu,
            memory: physical_memory().unwrap_or(4 << 30),
            gpus: gpus.unwrap_or_else(detect_gpus),
        }
    }

    /// Why `want` does not fit next to `used`, or `None` if it does.
    pub fn refuse(&self, used: &ResourceRequests, want: &ResourceRequests) -> Option<String> {
        // Allow for float dust in sums of fractional cores.
        if used.cpu + want.cpu > self.cpu + 1e-9 {
            return Some(format!(
                "insufficient cpu: the replica requests {} cores, {} of {} are free",
                want.cpu,
                trim(self.cpu - used.cpu),
                self.cpu
            ));
        }
        if used.memory.saturating_add(want.memory) > self.memory {
            return Some(format!(
                "insufficient memory: the replica requests {}, {} of {} are free",
                quantity::format(want.memory),
                quantity::format(self.memory.saturating_sub(used.memory)),
                quantity::format(self.memory)
            ));
        }
        if used.gpu + want.gpu > self.gpus {
            return Some(format!(
                "insufficient gpu: the replica requests {}, {} of {} are free",
                want.gpu,
                self.gpus.saturating_sub(used.gpu),
                self.gpus
            ));
        }
        None
    }
}

fn trim(x: f64) -> f64 {
    (x.max(0.0) * 1000.0).round() / 1000.0
}

/// Total physical memory from `/proc/meminfo` (Linux).
fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// GPUs that NVML reports, 0 where there is no NVIDIA driver. NVML is
/// loaded at run time (`libnvidia-ml.so.1`), so the binary needs no CUDA
/// to build or run.
pub fn detect_gpus() -> u32 {
    nvml::device_count().unwrap_or(0)
}

mod nvml {
    use std::ffi::{CStr, c_char, c_int, c_uint, c_void};

    type Init = unsafe extern "C" fn() -> c_int;
    type Count = unsafe extern "C" fn(*mut c_uint) -> c_int;

    /// `nvmlInit_v2` + `nvmlDeviceGetCount_v2` through `dlopen`.
    pub fn device_count() -> Option<u32> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the symbols have
        // NVML's documented C signatures; the handle stays open (NVML
        // keeps state) for the life of the process.
        unsafe {
            let lib = open(c"libnvidia-ml.so.1")?;
            let init: Init = std::mem::transmute(sym(lib, c"nvmlInit_v2")?);
            let count: Count = std::mem::transmute(sym(lib, c"nvmlDeviceGetCount_v2")?);
            if init() != 0 {
                return None;
            }
            let mut n: c_uint = 0;
            (count(&mut n) == 0).then_some(n)
        }
    }

    unsafe fn open(name: &CStr) -> Option<*mut c_void> {
        // SAFETY: see device_count.
        let h = unsafe { libc::dlopen(name.as_ptr() as *const c_char, libc::RTLD_NOW) };
        (!h.is_null()).then_some(h)
    }

    unsafe fn sym(lib: *mut c_void, name: &CStr) -> Option<*mut c_void> {
        // SAFETY: see device_count.
        let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cpu: f64, memory: u64, gpu: u32) -> ResourceRequests {
        ResourceRequests { cpu, memory, gpu }
    }

    #[test]
    fn refuses_what_does_not_fit_and_says_which_resource() {
        let cap = Capacity {
            cpu: 2.0,
            memory: 4 << 30,
            gpus: 1,
        };
        assert_eq!(
            cap.refuse(&req(1.5, 1 << 30, 0), &req(0.5, 1 << 30, 1)),
            None
        );
        let why = cap.refuse(&req(1.5, 0, 0), &req(1.0, 0, 0)).unwrap();
        assert!(
            why.contains("insufficient cpu") && why.contains("0.5 of 2"),
            "{why}"
        );
        let why = cap
            .refuse(&req(0.0, 3 << 30, 0), &req(0.1, 2 << 30, 0))
            .unwrap();
        assert!(
            why.contains("insufficient memory") && why.contains("1Gi of 4Gi"),
            "{why}"
        );
        let why = cap.refuse(&req(0.0, 0, 1), &req(0.1, 0, 1)).unwrap();
        assert!(
            why.contains("insufficient gpu") && why.contains("0 of 1"),
            "{why}"
        );
    }

    #[test]
    fn detects_this_machine() {
        let cap = Capacity::detect(Some(3));
        assert!(cap.cpu >= 1.0 && cap.memory > 0);
        assert_eq!(cap.gpus, 3);
        // No NVIDIA driver here: NVML is absent and that is zero GPUs, not
        // an error. (Where a driver exists this just counts its GPUs.)
        let _ = detect_gpus();
    }
}
