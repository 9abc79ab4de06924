# Shopfloor's services on Windows with NSSM (https://nssm.cc), the alternative to the WinSW files beside this one.
# Run as Administrator with nssm.exe on the PATH:  .\install-nssm.ps1 [-Services agent,dashboard,sync]
# Install and use: docs/services.md ("Windows").
param(
    [string[]]$Services = @("agent"),
    [string]$Shopfloor = "C:\shopfloor\.venv\Scripts\shopfloor.exe",
    [string]$Config = "C:\shopfloor\factory.yaml",
    [string]$Data = "C:\ProgramData\Shopfloor"
)
$ErrorActionPreference = "Stop"
$logs = Join-Path $Data "logs"
New-Item -ItemType Directory -Force $logs | Out-Null
$names = @{ agent = "ShopfloorAgent"; dashboard = "ShopfloorDashboard"; sync = "ShopfloorSync" }

foreach ($command in $Services) {
    $name = $names[$command]
    if (-not $name) { throw "unknown service '$command': agent, dashboard or sync" }
    nssm install $name $Shopfloor --log-format json --log-file (Join-Path $logs "$command.log") `
        $command --config $Config --data-dir $Data
    nssm set $name DisplayName "Shopfloor $command"
    nssm set $name AppDirectory $Data
    nssm set $name Start SERVICE_DELAYED_AUTO_START
    # What the process prints before its log file is open (a config error) lands here, rotated at 10 MB.
    nssm set $name AppStdout (Join-Path $logs "$command.service.log")
    nssm set $name AppStderr (Join-Path $logs "$command.service.log")
    nssm set $name AppRotateFiles 1
    nssm set $name AppRotateOnline 1
    nssm set $name AppRotateBytes 10485760
    # Stop with Ctrl+C, a clean stop, and wait for it; only then end the process.
    nssm set $name AppStopMethodConsole 60000
    # Restart on failure after 5 s; exit 2 is a config error, which restarting would not mend: the service
    # stays stopped until someone fixes the config (the message is in $command.service.log).
    nssm set $name AppExit Default Restart
    nssm set $name AppRestartDelay 5000
    nssm set $name AppExit 2 Exit
    nssm start $name
}
