# Sourced (not run) by scripts/up.sh, scripts/test.sh and bench/llm.sh:
# installs the Debian packages a build needs when they are missing, and
# exports llama.cpp's CPU options for this machine.
#
# llama-cpp-sys-2 builds llama.cpp for a generic x86-64 (AVX2) unless told
# otherwise. llama.cpp's own default is GGML_NATIVE, which on a CPU that
# reports AMX also compiles AMX code, and AMX faults in VMs that do not pass
# it through. So instead we turn on, one by one, the AVX-512 and VNNI
# extensions that /proc/cpuinfo lists, and leave AMX off. Changing them
# rebuilds llama.cpp (cargo tracks these variables).

# Debian packages: a C/C++ toolchain for -sys crates; cmake and libclang to
# build llama.cpp (llama-cpp-sys-2 runs CMake and bindgen); OpenMP at run
# time; Python's venv (pip:// model sources and the test clients); curl.
neocloud_need=()
command -v c++ >/dev/null || neocloud_need+=(build-essential)
for pkg in cmake libclang-dev libgomp1; do
    dpkg -s "$pkg" >/dev/null 2>&1 || neocloud_need+=("$pkg")
done
command -v curl >/dev/null || neocloud_need+=(curl)
python3 -c 'import venv, ensurepip' 2>/dev/null || neocloud_need+=(python3-venv)
if [ ${#neocloud_need[@]} -gt 0 ]; then
    neocloud_sudo=""
    [ "$(id -u)" -eq 0 ] || neocloud_sudo="sudo"
    echo "installing ${neocloud_need[*]}" >&2
    $neocloud_sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $neocloud_sudo apt-get install -y -qq "${neocloud_need[@]}"
fi

if [ "$(uname -m)" = x86_64 ] && [ -r /proc/cpuinfo ]; then
    neocloud_flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    neocloud_ggml() { # cpuinfo flag -> GGML option, unless the caller set it
        case "$neocloud_flags" in *" $1 "*)
            [ -n "${!2+x}" ] || export "$2=ON" ;;
        esac
    }
    neocloud_ggml avx512f GGML_AVX512
    neocloud_ggml avx512_vnni GGML_AVX512_VNNI
    neocloud_ggml avx512_bf16 GGML_AVX512_BF16
    neocloud_ggml avx512vbmi GGML_AVX512_VBMI
    neocloud_ggml avx_vnni GGML_AVX_VNNI
    unset -f neocloud_ggml
fi
