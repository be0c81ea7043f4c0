"""kvmcloud sftpbackup."""
