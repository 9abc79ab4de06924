# Installs Shopfloor from this wheelhouse on Windows, without network access (operations.md).
#
#   powershell -ExecutionPolicy Bypass -File install.ps1 [-Prefix C:\shopfloor] [-Python "C:\Python311\python.exe"]
#
# Each run makes a new virtualenv, PREFIX\venvs\shopfloor-VERSION-TIME, installs the wheels of this wheelhouse
# into it (only these files: no index, no pip configuration, every wheel checked against requirements.txt's
# SHA-256), checks that the `shopfloor` command starts, and only then points PREFIX\.venv (a directory junction)
# at it. The service runs PREFIX\.venv\Scripts\shopfloor.exe, so a failed install leaves the running version as
# it was, and the previous virtualenv stays for a roll-back (the script prints the command).
param(
    [string]$Prefix = "C:\shopfloor",
    [string]$Python = ""
)
$ErrorActionPreference = "Stop"

function Fail([string]$Message) {
    Write-Error "install.ps1: $Message" -ErrorAction Continue
    exit 2
}

$Here = Split-Path -Parent $MyInvocation.MyCommand.Path
foreach ($part in "BUILD.txt", "requirements.txt", "wheels") {
    if (-not (Test-Path (Join-Path $Here $part))) {
        Fail "$Here is not a complete wheelhouse (BUILD.txt, requirements.txt and wheels\ expected)"
    }
}
# A wheelhouse carried over on a stick or a share can arrive cut short: check every file before touching anything.
$SumsFile = Join-Path $Here "SHA256SUMS"
if (Test-Path $SumsFile) {
    $Damaged = @()
    foreach ($line in Get-Content $SumsFile) {
        $expected, $relative = $line -split "  ", 2
        $file = Join-Path $Here ($relative -replace "/", "\")
        if (-not (Test-Path $file) -or (Get-FileHash -Algorithm SHA256 $file).Hash.ToLower() -ne $expected) {
            $Damaged += $relative
        }
    }
    if ($Damaged.Count -gt 0) {
        Fail "the wheelhouse is damaged ($($Damaged -join ', ') do not match SHA256SUMS): copy it again; nothing was installed"
    }
}
$Build = @{}
foreach ($line in Get-Content (Join-Path $Here "BUILD.txt")) {
    $key, $value = $line -split "=", 2
    $Build[$key] = $value
}
$Version = $Build["shopfloor"]
$Want = $Build["python"]
if ($Build["sys_platform"] -ne "win32") {
    Fail "this wheelhouse is for $($Build['platform']); on Linux run install.sh"
}

# The Python to build the virtualenv with: -Python, else the py launcher's Python of the wheelhouse's version.
$PythonArgs = @()
if ($Python -eq "") {
    if (Get-Command py.exe -ErrorAction SilentlyContinue) {
        $Python = "py.exe"
        $PythonArgs = @("-$Want")
    } elseif (Get-Command python.exe -ErrorAction SilentlyContinue) {
        $Python = "python.exe"
    } else {
        Fail "no Python found: install Python $Want for all users (python.org installer), or pass -Python PATH"
    }
}
try {
    $Have = & $Python @PythonArgs -c "import sys; print('%d.%d' % sys.version_info[:2])" 2>$null
} catch {
    $Have = ""
}
if ($LASTEXITCODE -ne 0 -or -not $Have) {
    Fail "cannot run $Python $PythonArgs`: install Python $Want, or pass -Python PATH to its python.exe"
}
if ($Have -ne $Want) {
    Fail "this wheelhouse holds wheels for Python $Want; $Python is Python $Have`: pass -Python PATH to a Python $Want"
}

$Link = Join-Path $Prefix ".venv"
if ((Test-Path $Link) -and -not ((Get-Item $Link -Force).Attributes -band [IO.FileAttributes]::ReparsePoint)) {
    Fail "$Link is a directory, not the junction this script maintains: move it away first"
}

$Stamp = Get-Date -Format "yyyyMMdd-HHmmss"
$Venv = Join-Path $Prefix "venvs\shopfloor-$Version-$Stamp"
New-Item -ItemType Directory -Force -Path (Join-Path $Prefix "venvs") | Out-Null
Write-Output "installing Shopfloor $Version into $Venv"
& $Python @PythonArgs -m venv $Venv
if ($LASTEXITCODE -ne 0) { Fail "$Python cannot make a virtualenv in $Venv" }

# The wheelhouse alone: PIP_CONFIG_FILE=nul skips every pip.ini, --isolated every PIP_* variable (an index or
# find-links of the machine's own pip setup must not stand in for a file of this wheelhouse).
$env:PIP_CONFIG_FILE = "nul"
& (Join-Path $Venv "Scripts\python.exe") -m pip --isolated install --quiet --no-index --no-cache-dir `
    --disable-pip-version-check --find-links (Join-Path $Here "wheels") `
    --requirement (Join-Path $Here "requirements.txt")
$Installed = $LASTEXITCODE
Remove-Item Env:\PIP_CONFIG_FILE
if ($Installed -ne 0) {
    Remove-Item -Recurse -Force $Venv
    Fail "installing the wheels failed (the output above says which); the installed version is unchanged"
}
& (Join-Path $Venv "Scripts\shopfloor.exe") --help | Out-Null
if ($LASTEXITCODE -ne 0) {
    Remove-Item -Recurse -Force $Venv
    Fail "the new shopfloor command does not start; the installed version is unchanged"
}

$Previous = ""
if (Test-Path $Link) {
    $Previous = "$((Get-Item $Link -Force).Target)"
    # removes the junction only, never the virtualenv it points to
    [IO.Directory]::Delete($Link)
}
New-Item -ItemType Junction -Path $Link -Target $Venv | Out-Null
$Examples = Join-Path $Prefix "example-config"
New-Item -ItemType Directory -Force -Path $Examples | Out-Null
Copy-Item -Recurse -Force (Join-Path $Here "example-config\*") $Examples

Write-Output "Shopfloor $Version installed: $Link\Scripts\shopfloor.exe"
if ($Previous) {
    Write-Output "previous version kept in $Previous; to go back (service stopped): cmd /c rmdir `"$Link`" && cmd /c mklink /J `"$Link`" `"$Previous`""
}
Write-Output "next: & `"$Link\Scripts\shopfloor.exe`" check-config C:\shopfloor\factory.yaml (see operations.md)"
